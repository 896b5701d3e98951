"""`webhook check` reads what kubectl reads: merge keys, JSON streams, UTF-16 with a byte-order mark,
typed lists; and it refuses what kubectl refuses, with the file, document and line. The real
command over real files; the same answers from PyYAML's pure-Python parser as from libyaml."""

from __future__ import annotations

import codecs
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_check import CHECK, check
from webhook.policy.kubeyaml import MAX_DEPTH

POD = ("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: team}}\n"
       "spec: {{containers: [{{name: c, image: {image}}}]}}\n")
MERGED = """\
apiVersion: v1
kind: Pod
metadata: {name: merged, namespace: team}
spec:
  initContainers:
    - &container {name: c, image: evil.io/x:1}
  containers:
    - <<: *container
      name: c2
    - <<: [{name: d, image: registry.k8s.io/pause:3.9}, {name: ignored, image: evil.io/ignored}]
      name: e
"""


def judged(result: subprocess.CompletedProcess[str]) -> list[tuple[str, str, str, str]]:
    """(source, kind, name, decision) for each row of a ``-o json`` run."""
    return [(f"{r['source']}:{r['line']}" if r["line"] else f"{r['source']} items[{r['item']}]", r["kind"],
             f"{r['namespace']}/{r['name']}", r["decision"]) for r in json.loads(result.stdout)["results"]]


def test_merge_keys_are_read_and_judged_with_what_they_merge(tmp_path: Path) -> None:
    (tmp_path / "merged.yaml").write_text(MERGED)
    result = check("-o", "json", str(tmp_path / "merged.yaml"))
    assert (result.returncode, result.stderr) == (1, "")
    (pod,) = json.loads(result.stdout)["results"]
    assert (pod["name"], pod["line"], pod["decision"]) == ("merged", 1, "denied")
    message = pod["status"]["message"]
    assert 'spec.containers[0] "c2": image "evil.io/x:1"' in message  # merged in from the anchor
    assert "spec.containers[1]" not in message  # the first mapping listed wins: pause, allowed


def test_a_duplicate_key_is_still_refused_but_overriding_a_merged_key_is_not(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: &b {image: evil.io/x}\nkind: Pod\napiVersion: v1\n"
                                     "metadata: {name: p}\nspec: {containers: [{<<: *b, name: c, image: nginx}]}\n")
    assert judged(check("-o", "json", str(tmp_path / "a.yaml")))[0][3] == "allowed"
    (tmp_path / "b.yaml").write_text("kind: Pod\napiVersion: v1\nmetadata: {name: p, <<: {a: 1}, name: q}\n")
    result = check(str(tmp_path / "b.yaml"))
    assert result.returncode == 2
    assert result.stderr.endswith("b.yaml: document 1: not valid YAML: duplicate key 'name' (line 3, column 33)\n")


@pytest.mark.parametrize("separator", ["", "\n", "\n\n  \t"])
@pytest.mark.parametrize("name", ["stream.json", "stream.yaml", "-"])
def test_a_json_stream_is_read_object_by_object(tmp_path: Path, separator: str, name: str) -> None:
    objects = [_pod_object("first", "nginx"), _pod_object("second", "evil.io/x")]
    text = separator.join(json.dumps(o) for o in objects) + "\n"
    if name == "-":
        result = check("-o", "json", "-", stdin=text)
    else:
        (tmp_path / name).write_text(text)
        result = check("-o", "json", str(tmp_path / name))
    assert result.returncode == 1, result.stderr
    source = "<stdin>" if name == "-" else str(tmp_path / name)
    second_line = 1 + separator.count("\n")
    assert judged(result) == [(f"{source}:1", "Pod", "team/first", "allowed"),
                              (f"{source}:{second_line}", "Pod", "team/second", "denied")]
    assert [r["document"] for r in json.loads(result.stdout)["results"]] == [1, 2]


def test_a_broken_object_in_a_json_stream_is_named_and_the_others_judged(tmp_path: Path) -> None:
    lines = [json.dumps(_pod_object(name, "nginx")) for name in ("a", "b")] + ['{"apiVersion": "v1",, "kind": "Pod"}']
    (tmp_path / "stream.json").write_text("\n".join(lines) + "\n")
    result = check(str(tmp_path / "stream.json"))
    assert result.returncode == 2
    assert result.stderr == (f"webhook: error: {tmp_path / 'stream.json'}: document 3 (line 3): not valid JSON: "
                             "unexpected character, expected a string key (column 21)\n")
    assert result.stdout.endswith("2 objects: 2 allowed, 0 warned, 0 denied; 1 unreadable\n")


def test_yaml_that_starts_with_a_brace_is_still_yaml(tmp_path: Path) -> None:
    """kubectl tries JSON first and, when that fails, reads the whole input as YAML."""
    (tmp_path / "flow.yaml").write_text("{apiVersion: v1, kind: Pod, metadata: {name: flow}}\n---\n"
                                        + POD.format(name="block", image="nginx"))
    (tmp_path / "mixed.yaml").write_text(json.dumps(_pod_object("json", "nginx")) + "\n---\n"
                                         + POD.format(name="yaml", image="nginx"))
    result = check("-o", "json", str(tmp_path / "flow.yaml"), str(tmp_path / "mixed.yaml"))
    assert result.returncode == 0, result.stderr
    assert [row[2] for row in judged(result)] == ["default/flow", "team/block", "team/json", "team/yaml"]


def test_a_json_file_that_neither_json_nor_yaml_reads_gets_the_json_error(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{\n  "apiVersion": "v1",\n  "kind": "Pod" "x"\n}\n')
    (tmp_path / "trailing-comma.json").write_text('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "y"},}')
    result = check(str(tmp_path / "bad.json"), str(tmp_path / "trailing-comma.json"))
    assert result.stderr == (f"webhook: error: {tmp_path / 'bad.json'}: document 1 (line 3): not valid JSON: "
                             "unexpected character, expected ',' or '}' (column 17)\n")
    assert "default/y" in result.stdout  # a trailing comma is fine in YAML, so kubectl reads it too


@pytest.mark.parametrize("bom, codec", [(codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
                                        (codecs.BOM_UTF8, "utf-8")])
def test_utf16_and_a_byte_order_mark_as_powershell_writes_them(tmp_path: Path, bom: bytes, codec: str) -> None:
    text = (CHECK / "workloads.yaml").read_text()
    (tmp_path / "workloads.yaml").write_bytes(bom + text.replace("\n", "\r\n").encode(codec))
    (tmp_path / "twice.yaml").write_bytes(bom + (CHECK / "duplicate-key.yaml").read_text().encode(codec))
    def results(path: Path) -> list[dict[str, object]]:
        return [{k: v for k, v in r.items() if k not in ("source", "patch")}
                for r in json.loads(check("-o", "json", str(path)).stdout)["results"]]

    assert results(tmp_path / "workloads.yaml") == results(CHECK / "workloads.yaml")
    result = check(str(tmp_path / "twice.yaml"))
    assert result.stderr == (f"webhook: error: {tmp_path / 'twice.yaml'}: document 1: not valid YAML: "
                             "duplicate key 'image' (line 9, column 7)\n")


def test_bytes_that_are_not_text_are_named(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes("metadata: {name: café}\n".encode("latin-1"))
    (tmp_path / "odd.yaml").write_bytes(codecs.BOM_UTF16_LE + b"a\x00:")
    result = check(str(tmp_path / "latin1.yaml"), str(tmp_path / "odd.yaml"))
    assert result.stderr == (f"webhook: error: {tmp_path / 'latin1.yaml'}: is not UTF-8 text (invalid continuation "
                             f"byte at byte 20)\nwebhook: error: {tmp_path / 'odd.yaml'}: is not UTF-16 text "
                             "(truncated data at byte 4)\n")


def test_items_of_a_typed_list_take_its_kind_and_apiversion(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("""\
apiVersion: apps/v1
kind: DeploymentList
items:
  - metadata: {name: web, namespace: shop}
    spec: {template: {spec: {containers: [{name: c, image: evil.io/x}]}}}
  - apiVersion: apps/v1
    kind: StatefulSet
    metadata: {name: db, namespace: shop}
  - kind: Deployment
    metadata: {name: half}
---
apiVersion: v1
kind: List
items:
  - metadata: {name: nokind}
""")
    result = check("-o", "json", str(tmp_path / "list.yaml"))
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert judged(result) == [(f"{tmp_path / 'list.yaml'}:4", "Deployment", "shop/web", "denied"),
                              (f"{tmp_path / 'list.yaml'}:6", "StatefulSet", "shop/db", "allowed")]
    web = report["results"][0]
    assert (web["apiVersion"], web["resource"], web["item"]) == ("apps/v1", "deployments", 0)
    assert web["status"]["message"].startswith('spec.template.spec.containers[0] "c": image "evil.io/x"')
    assert [e["message"] for e in report["errors"]] == [
        f"{tmp_path / 'list.yaml'}: document 1, items[2] (line 9): Deployment has no apiVersion",
        f"{tmp_path / 'list.yaml'}: document 2, items[0] (line 15): has no kind"]
    stored = check("-o", "yaml", str(tmp_path / "list.yaml")).stdout
    assert "---\n# " + str(tmp_path / "list.yaml") + ":4: Deployment shop/web: denied\n" in stored
    assert "\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n" in stored


def test_an_unquoted_star_says_to_quote_it() -> None:
    result = check("-", stdin="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n  glob: *\n")
    assert result.returncode == 2
    assert result.stderr == ("webhook: error: <stdin>: document 1: not valid YAML: while scanning an alias: expected "
                             "alphabetic or numeric character, but found '\\n' (line 5, column 10); an unquoted * "
                             "starts a YAML alias: quote it, as in - \"*\"\n")


@pytest.mark.parametrize("text", [
    "apiVersion: v1\nkind: ConfigMap\ndata: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "apiVersion: v1\nkind: ConfigMap\ndata:\n" + "- " * 100_000 + "x\n",
])
def test_deep_nesting_is_refused_without_a_crash(text: str) -> None:
    result = check("-", stdin=text)
    assert result.returncode == 2
    assert result.stderr.startswith(f"webhook: error: <stdin>: document 1: not valid YAML: more than {MAX_DEPTH} "
                                    "levels of nesting (line ")
    assert "Traceback" not in result.stderr


def test_deep_json_is_refused_without_a_traceback() -> None:
    result = check("-", stdin='{"apiVersion": "v1", "kind": "ConfigMap", "data": ' + "[" * 300 + "]" * 300 + "}")
    assert (result.returncode, result.stderr) == (2, (
        f"webhook: error: <stdin>: document 1 (line 1): data[0][0]… is nested more than {MAX_DEPTH} levels deep "
        "(or has aliases that refer to themselves)\n"))


# --- without libyaml ------------------------------------------------------------------------------

WITHOUT_LIBYAML = """\
import runpy, sys
sys.modules["yaml._yaml"] = None  # as in a PyYAML built from source without libyaml
import yaml
from webhook.policy import kubeyaml
assert not yaml.__with_libyaml__ and kubeyaml.LOADER is kubeyaml.PureLoader
sys.argv = ["webhook", *sys.argv[1:]]
runpy.run_module("webhook", run_name="__main__")
"""


@pytest.mark.parametrize("args", [
    ["check", "tests/fixtures/check/workloads.yaml", "tests/fixtures/check/list.json"],
    ["check", "-o", "json", "tests/fixtures/check/broken.yaml", "tests/fixtures/check/duplicate-key.yaml",
     "tests/fixtures/check/no-kind.yaml"],
    ["check", "--policy", "tests/fixtures/mutating-policy.yaml", "-o", "yaml", "tests/fixtures/check/mirrored.yaml"],
])
def test_without_libyaml_the_answers_are_the_same(args: list[str]) -> None:
    def run(*prefix: str) -> tuple[int, str, str]:
        done = subprocess.run([sys.executable, *prefix, *args], capture_output=True, text=True, cwd=REPO, timeout=60,
                              check=False)
        return done.returncode, done.stdout, done.stderr

    assert run("-c", WITHOUT_LIBYAML) == run("-m", "webhook")


def _pod_object(name: str, image: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "team"},
            "spec": {"containers": [{"name": "c", "image": image}]}}
