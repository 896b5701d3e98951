"""The example CRD, its example objects and the embedded default policy agree with each other,
and the README shows what the server really answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO, ApiServerClient, ServerProcess
from tests.docs import Sandbox, doc_block, run_block
from tests.reviews import applied, decoded_patch, fixture, review
from webhook.policy.defaults import Branch, Leaf
from webhook.policy.model import load_policy

MANIFESTS = REPO / "manifests"
CRD = MANIFESTS / "crds" / "projects.example.sealyun.com.yaml"
EXAMPLES = sorted((MANIFESTS / "examples").glob("*.yaml"))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def crd_schema() -> dict[str, Any]:
    (version,) = load_yaml(CRD)["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def schema_problems(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """The checks the API server's structural schema makes on a Project (no more is used)."""
    kinds = {"object": dict, "integer": int, "boolean": bool, "string": str}
    if not isinstance(value, kinds[schema["type"]]) or (schema["type"] == "integer" and isinstance(value, bool)):
        return [f"{path or '.'}: not {schema['type']}"]
    problems = [f"{path}.{key}: required" for key in schema.get("required", []) if key not in value]
    if "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{path}: below {schema['minimum']}")
    for key, child in schema.get("properties", {}).items():
        if key in value and key not in ("apiVersion", "kind", "metadata"):
            problems += schema_problems(value[key], child, f"{path}.{key}")
    if path == ".spec":
        problems += [f"{path}.{key}: would be pruned" for key in value if key not in schema["properties"]]
    return problems


def test_embedded_default_defaults_project_replicas_only() -> None:
    defaults = load_policy(None).defaults
    tree = Branch((("spec", Branch((("replicas", Leaf(1)),))),))
    assert defaults.tree_for("example.sealyun.com", "v1alpha1", "Project") == tree
    assert defaults.tree_for("example.sealyun.com", "v1", "Project") == tree  # versions: ["*"]
    assert defaults.tree_for("example.sealyun.com", "v1alpha1", "Other") is None
    assert defaults.tree_for("", "v1", "Pod") is None
    assert not load_policy(None).rewriter


def test_the_crd_is_what_the_default_policy_defaults() -> None:
    crd = load_yaml(CRD)
    assert (crd["apiVersion"], crd["kind"]) == ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "projects.example.sealyun.com"
    assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.{crd['spec']['group']}"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == "Project"
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    rule = load_policy(None).defaults.rules[0]
    assert (rule.group, rule.kinds) == (crd["spec"]["group"], {"Project"})

    schema = crd_schema()
    assert schema["required"] == ["spec"]
    replicas = schema["properties"]["spec"]["properties"]["replicas"]
    assert (replicas["type"], replicas["minimum"]) == ("integer", 1)
    assert "default" not in replicas  # the webhook defaults it, not the schema


def test_the_crd_schema_is_structural() -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        assert "type" in node, f"{path} has no type"
        for key, child in node.get("properties", {}).items():
            walk(child, f"{path}.{key}")

    walk(crd_schema(), "")


def test_one_example_relies_on_defaults_and_one_sets_its_own(api: ApiServerClient) -> None:
    assert [path.name for path in EXAMPLES] == ["project-defaulted.yaml", "project-explicit.yaml"]
    results = {}
    for path in EXAMPLES:
        obj = load_yaml(path)
        assert obj["apiVersion"] == "example.sealyun.com/v1alpha1" and obj["kind"] == "Project"
        body = review(obj, namespace=obj["metadata"]["namespace"])
        response = api.review("/mutate", body)
        results[path.name] = decoded_patch(response)
        assert schema_problems(applied(obj, results[path.name]), crd_schema()) == []
    assert results == {
        "project-defaulted.yaml": [{"op": "add", "path": "/spec/replicas", "value": 1}],
        "project-explicit.yaml": [],
    }
    assert schema_problems(load_yaml(EXAMPLES[0]), crd_schema()) == []  # valid before too: replicas is optional
    assert schema_problems({"spec": {"replicas": 0}}, crd_schema()) == [".spec.replicas: below 1"]


def test_readme_shows_a_real_mutate_response(api: ApiServerClient, default_server: ServerProcess,
                                             tmp_path: Path) -> None:
    body = fixture("readme-project.json")
    response = api.review("/mutate", body)
    assert response == {
        "uid": "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
        "allowed": True,
        "patchType": "JSONPatch",
        "patch": "W3sib3AiOiJhZGQiLCJwYXRoIjoiL3NwZWMvcmVwbGljYXMiLCJ2YWx1ZSI6MX1d",
        "warnings": ["defaulted spec.replicas=1"],
    }
    assert decoded_patch(response) == [{"op": "add", "path": "/spec/replicas", "value": 1}]
    # The README's curl and base64 commands, run as shown against the same server.
    sandbox = Sandbox.make(tmp_path)
    (sandbox.cwd / "certs").symlink_to(default_server.cert_dir)
    run_block(doc_block("README.md", "curl-mutate"), sandbox, ports={default_server.port: 8443})
