"""The Makefile's two commands as the README shows them: `make run` passes ARGS on to `serve`."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import REPO


def make_n(*args: str) -> str:
    """What ``make`` would run (``-n``), the install step taken as done (``-o``)."""
    # Under `make test` this runs inside make: its MAKEFLAGS and MAKELEVEL would make this one a
    # sub-make, which prints "Entering directory" around what it would run.
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    result = subprocess.run(["make", "--no-print-directory", "-n", "-o", ".venv/.run-installed", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=True, env=env)
    return result.stdout


@pytest.mark.parametrize(("args", "command"), [
    ((), ".venv/bin/webhook serve"),
    (("ARGS=--log-format text --policy my.yaml",), ".venv/bin/webhook serve --log-format text --policy my.yaml"),
])
def test_make_run_passes_args_to_serve(args: tuple[str, ...], command: str) -> None:
    assert make_n("run", *args).rstrip() == command
