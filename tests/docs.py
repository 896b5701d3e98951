"""The code blocks of README.md and docs/*.md, for the tests that check them.

The docs show commands and what they print. So that what they show cannot drift from what the
product does, every block that shows output names the test that checks it, in an HTML comment on
the line right before its fence:

    <!-- doc-block: certs-create, checked by tests/test_docs.py::test_certificates -->

That test must read the block itself, ``doc_block("docs/operations.md", "certs-create")``, and
compare it with what really happens; tests/test_docs.py reads every test's source and fails when
a marker names a test that does not exist or does not read that block. Which blocks need a
marker: a ``console`` block with any output line, and every ``text`` or ``json`` block, since
those hold output only. ``yaml`` blocks are policy examples, and each must load unless it is
marked. Every fence names its language.

In a ``console`` block, ``$ `` begins a command, a command line ending in ``\\`` goes on in the next
line, a line starting ``# `` is a comment, and every other line is output of the command before it.

``run_block`` runs the commands of a block in one bash session, in a ``Sandbox`` directory with
``webhook`` on the PATH (this checkout's, whatever is installed), and compares each command's
output (stdout and stderr, as a terminal shows them) with the lines under it. ``match`` compares,
line by line and ignoring trailing spaces, with two elisions the docs may use:

- a line that is only ``…`` stands for any number of lines, none included;
- a line that ends in ``…`` stands for any line that begins with what comes before the ``…``.

Nothing else is forgiven, except through the normalisers below, which a test passes explicitly
for what truly varies from run to run; each replaces what it matches, on both sides, by a fixed
token. Ports are mapped separately (``ports``): the docs show the defaults (8443, 8081, and 6443
for the stand-in API server), the tests listen wherever the kernel lets them.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- doc-block: (?P<id>[a-z0-9-]+), checked by (?P<test>tests/\w+\.py::\w+) -->$")
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\S*)\s*$")
OUTPUT_LANGUAGES = ("text", "json")
LANGUAGES = ("console", "yaml", *OUTPUT_LANGUAGES)
ELLIPSIS = "…"

Normaliser = Callable[[str], str]


def _replace(pattern: str, token: str) -> Normaliser:
    compiled = re.compile(pattern)

    def normalise(text: str) -> str:
        return compiled.sub(token, text)

    normalise.__doc__ = f"{pattern} -> {token}"
    return normalise


# Dates and times, in RFC 3339 and in the text log format (2026-11-21 22:56:36,007): every run has its own.
TIMES = _replace(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?(?:Z|[+-]\d\d:?\d\d)?", "<time>")
# Certificate serial numbers (hex, up to 40 digits): random for every certificate.
SERIALS = _replace(r"\b[0-9a-f]{30,40}\b", "<serial>")
# Object uids (UUIDs), which the API server makes for every object.
UIDS = _replace(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<uid>")
# How long a review took, in a log line.
DURATIONS = _replace(r'"durationMs":[0-9.]+', '"durationMs":<ms>')
# Every number: for the benchmark's summary, whose wording is checked and whose figures are a run's own.
NUMBERS = _replace(r"\d+(?:[.,]\d+)*", "<n>")
# How curl words a connection that ends without an answer differs between its versions.
CURL_ERRORS = _replace(r"curl: \(\d+\) .*", "curl: <error>")


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Step:
    command: str  # without the "$ ", continuation lines joined by newlines
    output: tuple[str, ...]
    line: int  # in the document, 1-based


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository
    line: int  # of the opening fence, 1-based
    lang: str
    body: tuple[str, ...]
    id: str | None = None
    test: str | None = None  # tests/FILE.py::NAME, from the marker

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" + (f" ({self.id})" if self.id else "")

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self.body)

    @property
    def steps(self) -> list[Step]:
        """The commands of a console block, each with the output lines under it."""
        steps: list[Step] = []
        command: list[str] | None = None
        output: list[str] = []
        start = 0

        def close() -> None:
            if command is not None:
                while output and not output[-1].strip():
                    output.pop()
                steps.append(Step("\n".join(command), tuple(output), start))

        for offset, line in enumerate(self.body, start=self.line + 1):
            if command is not None and not output and command[-1].endswith("\\"):
                command.append(line)
            elif line.startswith("$ ") or line == "$":
                close()
                command, output, start = [line[2:]], [], offset
            elif line.startswith("# ") or line == "#":
                continue
            elif command is not None:
                output.append(line)
            elif line.strip():
                raise AssertionError(f"{self.path}:{offset}: output before any command: {line!r}")
        close()
        return steps

    @property
    def shows_output(self) -> bool:
        if self.lang in OUTPUT_LANGUAGES:
            return True
        return self.lang == "console" and any(step.output for step in self.steps)

    def step(self, prefix: str) -> Step:
        """The one step whose command begins with ``prefix``."""
        found = [step for step in self.steps if step.command.startswith(prefix)]
        assert len(found) == 1, f"{self.where}: {len(found)} commands begin with {prefix!r}"
        return found[0]


@cache
def blocks(path: str) -> tuple[Block, ...]:
    """Every fenced block of a document (``path`` relative to the repository), in order."""
    lines = (REPO / path).read_text().splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent = opening["indent"]
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != f"{indent}```":
            end += 1
        assert end < len(lines), f"{path}:{index + 1}: the fence is never closed"
        marker = MARKER.match(lines[index - 1].strip()) if index else None
        body = tuple(line.removeprefix(indent) for line in lines[index + 1:end])
        found.append(Block(path, index + 1, opening["lang"], body, marker["id"] if marker else None,
                           marker["test"] if marker else None))
        index = end + 1
    return tuple(found)


def stray_markers(path: str) -> list[int]:
    """Lines with a marker that is not right before a fence, or that does not parse."""
    lines = (REPO / path).read_text().splitlines()
    return [number for number, line in enumerate(lines, start=1)
            if "doc-block" in line and (not MARKER.match(line.strip()) or number == len(lines)
                                        or not FENCE.match(lines[number]))]


def doc_block(path: str, block_id: str) -> Block:
    """The block of ``path`` whose marker says ``block_id``. Tests call this with literal arguments,
    so that tests/test_docs.py can see which test reads which block."""
    found = [block for block in blocks(path) if block.id == block_id]
    assert len(found) == 1, f"{path}: {len(found)} blocks are marked {block_id!r}"
    return found[0]


def doc_block_calls(source: ast.AST) -> list[tuple[str, str]]:
    """The (path, id) of every ``doc_block("path", "id")`` call in ``source``."""
    calls = []
    for node in ast.walk(source):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "doc_block":
            args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            assert len(args) == len(node.args) == 2, f"line {node.lineno}: doc_block takes two literal strings"
            calls.append((args[0], args[1]))
    return calls


# --- comparing -------------------------------------------------------------------------------------

def _normalised(text: str, normalisers: Iterable[Normaliser]) -> str:
    for normalise in normalisers:
        text = normalise(text)
    return text


def _line_matches(expected: str, actual: str) -> bool:
    if expected.endswith(ELLIPSIS) and expected != ELLIPSIS:
        return actual.startswith(expected[:-1])
    return expected == actual


def _matches(expected: Sequence[str], actual: Sequence[str]) -> bool:
    # reachable[j]: the expected lines so far can account for exactly the first j actual lines
    reachable = [True] + [False] * len(actual)
    for want in expected:
        if want == ELLIPSIS:
            for j in range(1, len(actual) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            reachable = [False] + [reachable[j] and _line_matches(want, actual[j]) for j in range(len(actual))]
    return reachable[-1]


def match(expected: Sequence[str], actual: str, normalisers: Iterable[Normaliser] = (), *, what: str = "") -> None:
    """Assert that ``actual`` is what the doc shows in ``expected``, with the elisions and normalisers."""
    normalisers = tuple(normalisers)
    want = [_normalised(line, normalisers).rstrip() for line in expected]
    got = [line.rstrip() for line in _normalised(actual, normalisers).splitlines()]
    while got and not got[-1]:
        got.pop()
    if not _matches(want, got):
        raise AssertionError(f"{what}: the doc shows\n" + "\n".join(want) + "\n\nbut the command printed\n"
                             + "\n".join(got) + "\n\n(printed, before normalising:)\n" + actual)


def map_ports(text: str, mapping: Mapping[int, int]) -> str:
    """``:PORT`` written as ``:mapping[PORT]``, every port in one pass, so no port is mapped twice."""
    if not mapping:
        return text
    alternatives = "|".join(str(port) for port in sorted(mapping, reverse=True))
    return re.sub(rf"(?<=:)({alternatives})\b", lambda m: str(mapping[int(m[1])]), text)


# --- running ---------------------------------------------------------------------------------------

@dataclass
class Sandbox:
    """A working directory for a doc's commands: ``manifests``, ``tests`` and ``docs`` from the repository,
    ``webhook`` on the PATH running this checkout, a HOME of its own (no ~/.kube/config), and a
    terminal 100 columns wide for the help texts."""

    cwd: Path
    env: dict[str, str]

    @classmethod
    def make(cls, directory: Path) -> Sandbox:
        cwd, bin_dir, home = directory / "work", directory / "bin", directory / "home"
        for path in (cwd, bin_dir, home):
            path.mkdir(parents=True)
        for name in ("manifests", "tests", "docs"):
            (cwd / name).symlink_to(REPO / name)
        shim = bin_dir / "webhook"
        shim.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m webhook "$@"\n')
        shim.chmod(0o755)
        env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home), "COLUMNS": "100", "LC_ALL": "C.UTF-8",
               "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        return cls(cwd, env)

    def python(self) -> list[str]:
        """Run Python as the docs' ``.venv/bin/python`` does: with this checkout importable."""
        return ["env", f"PYTHONPATH={REPO}", sys.executable]


def run_steps(steps: Sequence[Step], sandbox: Sandbox, *, ports: Mapping[int, int] | None = None,
              timeout: float = 120) -> list[str]:
    """Run the commands in one bash session, as typed; return what each printed (stdout and stderr)."""
    reverse = {shown: actual for actual, shown in (ports or {}).items()}
    outputs = sandbox.cwd.parent / "outputs"
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.mkdir()
    script = "".join(f"{{ {map_ports(step.command, reverse)}\n}} >'{outputs}/{n}' 2>&1 </dev/null\n"
                     for n, step in enumerate(steps))
    subprocess.run(["bash", "-c", script], cwd=sandbox.cwd, env=sandbox.env, timeout=timeout, check=False)
    return [(outputs / str(n)).read_text() if (outputs / str(n)).exists() else "" for n in range(len(steps))]


def run_block(block: Block, sandbox: Sandbox, *, normalisers: Iterable[Normaliser] = (),
              ports: Mapping[int, int] | None = None, timeout: float = 120) -> None:
    """Run every command of ``block`` and check that each prints what the block shows under it."""
    assert block.lang == "console", f"{block.where}: not a console block"
    steps = block.steps
    assert steps, f"{block.where}: no commands"
    outputs = run_steps(steps, sandbox, ports=ports, timeout=timeout)
    for step, output in zip(steps, outputs, strict=True):
        match(step.output, map_ports(output, ports or {}), normalisers,
              what=f"{block.path}:{step.line} ({block.id}): $ {step.command}")


class Process:
    """A doc's long-running command (``webhook serve …``, ``webhook audit --watch``), started in the
    sandbox with ``extra`` arguments appended (the ports a test chose), its output in a file."""

    def __init__(self, command: str, sandbox: Sandbox, *extra: str) -> None:
        self.log = sandbox.cwd.parent / f"process-{id(self)}.log"
        self._out = self.log.open("wb")
        arguments = " ".join(shlex.quote(arg) for arg in extra)
        self.process = subprocess.Popen(["bash", "-c", f"exec {command} {arguments}"], cwd=sandbox.cwd,
                                        env=sandbox.env, stdout=self._out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text not in (output := self.output()):
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode} before printing {text!r}:\n{output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not printed within {timeout} s:\n{output}")
            time.sleep(0.05)
        return output

    def wait_listening(self, *ports: int, timeout: float = 30) -> None:
        """Until every port accepts connections (the "serving" line comes once they are bound, a
        moment before they listen)."""
        deadline = time.monotonic() + timeout
        for port in ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"nothing listens on {port}:\n{self.output()}") from None
                    time.sleep(0.05)

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()
        return self.process.returncode
