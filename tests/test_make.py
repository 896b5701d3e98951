"""The Makefile's two commands as the README shows them: `make run` passes ARGS on to `serve`."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO


def make_n(*args: str) -> str:
    """What ``make`` would run (``-n``), the install step taken as done (``-o``)."""
    result = subprocess.run(["make", "-n", "-o", ".venv/.run-installed", *args], cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=True)
    return result.stdout


@pytest.mark.parametrize(("args", "command"), [
    ((), ".venv/bin/webhook serve"),
    (("ARGS=--log-format text --policy my.yaml",), ".venv/bin/webhook serve --log-format text --policy my.yaml"),
])
def test_make_run_passes_args_to_serve(args: tuple[str, ...], command: str) -> None:
    assert make_n("run", *args).rstrip() == command
