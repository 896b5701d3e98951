"""Policy hot reload on the real server: good, bad, good again; a ConfigMap symlink swap; no
request judged under a mix of versions; every worker; a file that vanishes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.conftest import ApiServerClient, ServerProcess, eventually
from tests.reviews import pod_review

T = TypeVar("T")
ONLY_A = "ghcr.io/acme/app:1"
ONLY_B = "quay.io/acme/app:1"
POLICY_A = "images: {allow: [ghcr.io/*]}\n"
POLICY_B = "images: {allow: [quay.io/*]}\n"



def allowed(client: ApiServerClient, image: str) -> bool:
    return bool(client.review("/validate", pod_review(image))["allowed"])


def policy_check(client: ApiServerClient) -> dict[str, Any]:
    return client.request("GET", "/readyz").json()["checks"]["policy"]  # type: ignore[no-any-return]


def metric_value(server: ServerProcess, line_start: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{server.probe_port}/metrics").text
    found = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(found[0].split()[-1]) if found else 0.0


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_good_bad_then_good_again(start_server: Any, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_A)
    with start_server("--policy", str(path), "--reload-interval", "0.1") as server:
        client = server.client()
        assert allowed(client, ONLY_A) and not allowed(client, ONLY_B)

        write_atomically(path, POLICY_B)
        assert eventually(lambda: allowed(client, ONLY_B))
        assert not allowed(client, ONLY_A)
        good_hash = policy_check(client)["sha256"]

        write_atomically(path, "images: {allow: [quay.io/acme-*]}\n")
        check = eventually(lambda: (c := policy_check(client))["reloadError"] and c)
        assert check["reloadError"] == (f"policy file {path}: images.allow[0]: pattern 'quay.io/acme-*': "
                                        "'*' must be a whole path component, not part of 'acme-*'")
        assert check["ready"] is True and check["sha256"] == good_hash  # the last good one stays
        assert client.request("GET", "/readyz").status_code == 200
        assert allowed(client, ONLY_B)
        assert 'policy reload refused' in server.logs() and "images.allow[0]" in server.logs()

        write_atomically(path, "images: {allow: [ghcr.io/*, quay.io/*]}\n")
        assert eventually(lambda: allowed(client, ONLY_A))
        assert policy_check(client)["reloadError"] is None
        assert metric_value(server, 'webhook_policy_reloads_total{result="success"}') == 2
        assert metric_value(server, 'webhook_policy_reloads_total{result="error"}') == 1
        client.close()


def test_a_configmap_symlink_swap_is_picked_up(start_server: Any, tmp_path: Path) -> None:
    """A ConfigMap volume: policy.yaml -> ..data/policy.yaml, ..data -> ..<timestamp>/, swapped whole."""
    first = tmp_path / "..2026_11_21_00_00_00.1"
    first.mkdir()
    (first / "policy.yaml").write_text(POLICY_A)
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "policy.yaml").symlink_to("..data/policy.yaml")
    with start_server("--policy", str(tmp_path / "policy.yaml"), "--reload-interval", "0.1") as server:
        client = server.client()
        assert not allowed(client, ONLY_B)
        second = tmp_path / "..2026_11_21_00_05_00.2"
        second.mkdir()
        (second / "policy.yaml").write_text(POLICY_B)
        (tmp_path / "..data_tmp").symlink_to(second.name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # what the kubelet does
        assert eventually(lambda: allowed(client, ONLY_B))
        client.close()


def test_no_request_is_judged_under_a_mix_of_policies(start_server: Any, tmp_path: Path) -> None:
    """Each answer denies exactly one of the two images: A's answer or B's, never neither or both."""
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_A)
    with start_server("--policy", str(path), "--reload-interval", "0.05") as server:
        stop = threading.Event()
        answers: list[str] = []

        def load() -> None:
            client = server.client()
            while not stop.is_set():
                answers.append(client.review("/validate", pod_review(ONLY_A, ONLY_B))["status"]["message"])
            client.close()

        threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
        for thread in threads:
            thread.start()
        for index in range(12):
            write_atomically(path, POLICY_B if index % 2 == 0 else POLICY_A)
            time.sleep(0.15)
        stop.set()
        for thread in threads:
            thread.join(10)
    assert len(answers) > 50
    under_a = sum(1 for a in answers if ONLY_B in a and ONLY_A not in a)
    under_b = sum(1 for a in answers if ONLY_A in a and ONLY_B not in a)
    assert under_a + under_b == len(answers)
    assert under_a and under_b  # both versions were really in force during the run


def test_every_worker_reloads(start_server: Any, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_A)
    with start_server("--policy", str(path), "--workers", "2", "--reload-interval", "0.1") as server:
        write_atomically(path, POLICY_B)
        time.sleep(0.5)

        def all_fresh_connections_see_b() -> bool:
            results = []
            for _ in range(12):  # new connections land on both workers
                client = server.client()
                results.append(allowed(client, ONLY_B))
                client.close()
            return all(results)

        assert eventually(all_fresh_connections_see_b)


def test_a_vanished_policy_file_keeps_the_last_good_policy(start_server: Any, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_B)
    with start_server("--policy", str(path), "--reload-interval", "0.1") as server:
        client = server.client()
        path.unlink()
        check = eventually(lambda: (c := policy_check(client))["reloadError"] and c)
        assert "has vanished or cannot be read" in check["reloadError"]
        assert allowed(client, ONLY_B) and not allowed(client, ONLY_A)
        assert client.request("GET", "/readyz").status_code == 200
        path.write_text(POLICY_A)
        assert eventually(lambda: allowed(client, ONLY_A))
        client.close()
