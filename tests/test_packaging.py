"""The wheel the Docker image installs: built, installed into a fresh virtual environment
(no source tree on the path), and run. No Docker engine runs here, so this checks the
packaging the image relies on."""

from __future__ import annotations

import signal
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, ServerProcess
from tests.reviews import pod_review


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(work / "dist"),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = (work / "dist").glob("admission_webhook-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "webhook/policy/default.yaml" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]
    venv.create(work / "venv", with_pip=True)
    subprocess.run([str(work / "venv/bin/python"), "-m", "pip", "install", "--quiet", "--only-binary", "PyYAML",
                    "--constraint", str(REPO / "requirements.lock"), str(wheel)], check=True, capture_output=True,
                   timeout=600)
    return work / "venv" / "bin"


def test_installed_console_script_helps(installed: Path, tmp_path: Path) -> None:
    result = subprocess.run([str(installed / "webhook"), "--help"], capture_output=True, text=True, cwd=tmp_path,
                            check=False, timeout=60)
    assert result.returncode == 0 and "usage: webhook" in result.stdout


def test_installed_yaml_parser_is_libyaml(installed: Path, tmp_path: Path) -> None:
    """As the image installs it, PyYAML comes as its wheel, with libyaml: check reads YAML in C."""
    probe = ("import yaml; from webhook.policy import kubeyaml; "
             "print(yaml.__with_libyaml__, kubeyaml.LOADER.__name__)")
    result = subprocess.run([str(installed / "python"), "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                            check=True, timeout=60)
    assert result.stdout == "True FastLoader\n"


def test_installed_server_answers_and_stops_cleanly(installed: Path, tmp_path: Path) -> None:
    server = ServerProcess(["--drain-seconds", "0.2"], tmp_path / "certs", tmp_path / "serve.log",
                           executable=[str(installed / "webhook")], cwd=tmp_path)
    try:
        server.wait_ready()
        client = server.client()
        assert client.review("/validate", pod_review("evil.io/x"))["allowed"] is False
        client.close()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=15) == 0
    finally:
        server.stop()
