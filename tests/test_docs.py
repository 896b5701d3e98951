"""README.md and docs/*.md show only what is true today.

The guard: every block that shows output names a test that reads it (see tests/docs.py for the
rules), links between the documents resolve, and policy examples load. Then the blocks that
need nothing but this checkout are run here, as a reader would type them, and compared.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import REPO, ServerProcess, eventually, free_ports
from tests.docs import (
    DURATIONS,
    LANGUAGES,
    SERIALS,
    TIMES,
    Block,
    Process,
    Sandbox,
    blocks,
    doc_block,
    doc_block_calls,
    doc_files,
    map_ports,
    match,
    run_block,
    stray_markers,
)
from webhook.policy.model import parse_policy

DOCS = [str(path.relative_to(REPO)) for path in doc_files()]
ALL = [block for path in DOCS for block in blocks(path)]


@cache
def functions_of(path: str) -> dict[str, ast.FunctionDef]:
    tree = ast.parse((REPO / path).read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


# --- the guard -----------------------------------------------------------------------------------

def test_there_are_docs_and_the_readme_links_each() -> None:
    assert "README.md" in DOCS and len(DOCS) > 1
    readme = (REPO / "README.md").read_text()
    for path in DOCS[1:]:
        assert f"]({path})" in readme, f"README.md does not link {path}"


@pytest.mark.parametrize("path", DOCS)
def test_every_fence_names_its_language_and_markers_sit_on_fences(path: str) -> None:
    assert [b.where for b in blocks(path) if b.lang not in LANGUAGES] == []
    assert stray_markers(path) == [], "a doc-block marker must be the line right before a fence"


def test_every_block_that_shows_output_is_checked_by_a_test() -> None:
    unchecked = [block.where for block in ALL if block.shows_output and block.test is None]
    assert unchecked == [], "mark these with the test that checks them (see tests/docs.py)"


def test_each_marker_names_a_test_that_reads_that_very_block() -> None:
    ids = [(block.path, block.id) for block in ALL if block.id]
    assert len(ids) == len(set(ids)), "a block id is used twice in one document"
    for block in (b for b in ALL if b.test):
        path, _, name = block.test.partition("::")  # type: ignore[union-attr]
        assert (REPO / path).is_file(), f"{block.where}: {path} does not exist"
        function = functions_of(path).get(name)
        assert function is not None, f"{block.where}: {path} has no test {name}"
        assert (block.path, block.id) in doc_block_calls(function), \
            f"{block.where}: {block.test} never calls doc_block({block.path!r}, {block.id!r})"


def test_every_doc_block_a_test_reads_is_marked_for_that_test() -> None:
    marked = {(block.path, block.id): block.test for block in ALL if block.id}
    for path in sorted((REPO / "tests").glob("*.py")):
        relative = str(path.relative_to(REPO))
        for name, function in functions_of(relative).items():
            for call in doc_block_calls(function):
                assert call in marked, f"{relative}::{name} reads {call}, which no marker names"
                assert marked[call] == f"{relative}::{name}", \
                    f"{relative}::{name} reads {call}, which is marked for {marked[call]}"


@pytest.mark.parametrize("block", [b for b in ALL if b.lang == "yaml" and not b.test], ids=lambda b: b.where)
def test_policy_examples_load(block: Block) -> None:
    parse_policy(block.text.encode(), block.where)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("path", DOCS)
def test_links_between_the_documents_resolve(path: str) -> None:
    text = (REPO / path).read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = ((REPO / path).parent / file).resolve() if file else REPO / path
        assert linked.exists(), f"{path}: the link {target} leads nowhere"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.MULTILINE)
            assert anchor in {slug(h) for h in headings}, f"{path}: the link {target} names no heading"


@pytest.mark.parametrize("path", DOCS)
def test_no_count_of_tests_to_go_stale(path: str) -> None:
    assert not re.search(r"\d+ passed", (REPO / path).read_text())


def test_blocks_are_read_as_commands_and_output_with_elisions() -> None:
    block = Block("x.md", 1, "console", ("# a comment", "$ one \\", "    --two", "out", "", "$ three"))
    assert [(s.command, s.output) for s in block.steps] == [("one \\\n    --two", ("out",)), ("three", ())]
    match(["a", "…", "z"], "a\nb\nc\nz\n")
    match(["ab…"], "abc")
    with pytest.raises(AssertionError):
        match(["a", "…", "z"], "a\nb\n")
    assert map_ports("127.0.0.1:40000 :8443 :50000", {40000: 8443, 8443: 8081}) == "127.0.0.1:8443 :8081 :50000"


# --- the blocks that need only this checkout -------------------------------------------------------

@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox.make(tmp_path)


def test_help_texts(sandbox: Sandbox) -> None:
    run_block(doc_block("README.md", "help"), sandbox)
    run_block(doc_block("docs/operations.md", "serve-usage"), sandbox)
    run_block(doc_block("docs/cluster.md", "cluster-usage"), sandbox)


def test_the_first_start_says_where_the_ca_is(sandbox: Sandbox) -> None:
    """What `make run` (`.venv/bin/webhook serve`) prints from a fresh clone, without certs/."""
    https, probe = free_ports(2)
    server = Process("webhook serve", sandbox, "--port", str(https), "--probe-port", str(probe))
    try:
        output = server.wait_for('"certificateNotAfter"')
    finally:
        server.stop()
    block = doc_block("README.md", "first-start")
    first = "\n".join(map_ports(output, {https: 8443, probe: 8081}).splitlines()[:2])
    match(block.body, first, (TIMES,), what=block.where)


def test_the_server_answers_as_shown(default_server: ServerProcess, sandbox: Sandbox) -> None:
    (sandbox.cwd / "certs").symlink_to(default_server.cert_dir)
    ports = {default_server.port: 8443, default_server.probe_port: 8081}
    run_block(doc_block("README.md", "curl-validate"), sandbox, ports=ports)
    run_block(doc_block("docs/operations.md", "probes"), sandbox, ports=ports, normalisers=(TIMES, SERIALS))

    (shown,) = doc_block("docs/operations.md", "log-denial").body
    logged = eventually(lambda: [line for line in default_server.logs().splitlines()
                                 if '"validate denied"' in line and "9c3e1f7a-2b4d-4e8f-a1c2-3d4e5f6a7b8c" in line])
    assert logged, "the denial was not logged"
    match([shown], logged[-1], (TIMES, DURATIONS), what="docs/operations.md (log-denial)")


def test_the_default_policy_is_shown_as_it_is() -> None:
    shown = doc_block("README.md", "default-policy").text
    assert shown == (REPO / "webhook/policy/default.yaml").read_text()


def test_the_readme_shows_a_multi_team_policy(sandbox: Sandbox) -> None:
    shown = doc_block("README.md", "multi-team-policy").text
    assert shown == (REPO / "docs/examples/multi-team/policy.yaml").read_text()
    run_block(doc_block("README.md", "multi-team-check"), sandbox)


def test_certificates(sandbox: Sandbox) -> None:
    """Made, kept, printed, refused when half there, and rotated: one directory, in the docs' order."""
    run_block(doc_block("docs/operations.md", "certs-create"), sandbox)
    run_block(doc_block("docs/operations.md", "certs-half"), sandbox)
    run_block(doc_block("docs/operations.md", "certs-rotate"), sandbox)


def test_policy_errors_name_the_file_key_and_problem(sandbox: Sandbox) -> None:
    run_block(doc_block("docs/policy.md", "policy-errors"), sandbox)
