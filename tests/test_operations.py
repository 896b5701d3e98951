"""Operations: exact metrics after a known mix of reviews, JSON decision logs that never hold
object contents, and an in-band answer when evaluation overruns its deadline."""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ApiServerClient, ServerProcess, eventually, write_policy
from tests.reviews import applied, decoded_patch, pod_review, pod_spec, review, workload
from tests.steady import assert_survived, attack
from webhook.admission.deadline import NEVER, Deadline, DeadlineExceeded, budget, parse_go_duration
from webhook.admission.mutate import mutate
from webhook.admission.patch import diff
from webhook.admission.review import decode_review
from webhook.logs import FIELD_LIMIT, JsonFormatter
from webhook.policy.defaults import apply as apply_defaults
from webhook.policy.model import parse_policy
from webhook.policy.rewrite import rewrite_images

SECRET = "s3cr3t-ghp_0123456789abcdefghijklmnopqrstuvwxyz"  # noqa: S105 - a fake, to prove it is never logged


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample, 0 when the series does not exist yet."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if found == labels:
            return float(match.group(2))
    return 0.0


def send_mix(api: ApiServerClient) -> None:
    for _ in range(3):
        assert api.review("/validate", pod_review("nginx"))["allowed"]
    for _ in range(2):
        assert not api.review("/validate", pod_review("evil.io/x", "evil.io/y", "Bad/Ref"))["allowed"]
    assert api.review("/validate", pod_review("nginx", operation="DELETE"))["allowed"]
    assert api.review("/mutate", pod_review("nginx"))["allowed"]
    assert api.post("/validate", b"{broken").status_code == 400


@pytest.mark.parametrize("workers", ["1", "2"])
def test_metrics_count_exactly(start_server: Any, workers: str) -> None:
    with start_server("--workers", workers) as server:
        clients = [server.client() for _ in range(4)]  # several connections: spread over the workers
        for client in clients:
            send_mix(client)
        time.sleep(0.2)
        text = httpx.get(f"http://127.0.0.1:{server.probe_port}/metrics").text
        policy_hash = _default_hash(server)
        for client in clients:
            client.close()
    requests = "webhook_admission_requests_total"
    base = {"webhook": "validate", "kind": "Pod", "mode": "enforce", "scope": "baseline"}
    assert metric(text, requests, operation="CREATE", decision="allowed", **base) == 12
    assert metric(text, requests, operation="CREATE", decision="denied", **base) == 8
    assert metric(text, requests, operation="DELETE", decision="allowed", **base) == 4
    assert metric(text, requests, webhook="mutate", operation="CREATE", kind="Pod", decision="allowed",
                  mode="enforce", scope="baseline") == 4
    assert metric(text, "webhook_image_violations_total", registry="other") == 16  # the policy names no evil.io
    assert metric(text, "webhook_image_violations_total", registry="invalid") == 8  # "Bad/Ref" does not parse
    assert metric(text, "webhook_admission_duration_seconds_count", webhook="validate") == 24
    assert metric(text, "webhook_admission_duration_seconds_bucket", webhook="validate", le="10.0") == 24
    assert metric(text, "webhook_inflight_requests") == 0
    assert metric(text, "webhook_policy_info", hash=policy_hash) == 1
    assert metric(text, "webhook_certificate_expiry_timestamp_seconds") > time.time()


def _default_hash(server: ServerProcess) -> str:
    client = server.client()
    try:
        return str(client.request("GET", "/readyz").json()["checks"]["policy"]["sha256"])[:12]
    finally:
        client.close()


def test_metrics_on_the_https_port_too(api: ApiServerClient) -> None:
    reply = api.request("GET", "/metrics")
    assert reply.status_code == 200
    assert "# TYPE webhook_admission_duration_seconds histogram" in reply.text


def test_decision_logs_are_json_with_uid_and_no_object_contents(start_server: Any) -> None:
    pod = workload("Pod", pod_spec("evil.io/x:1"))
    container = pod["spec"]["containers"][0]
    container["env"] = [{"name": "TOKEN", "value": SECRET}]
    pod["metadata"]["annotations"] = {"note": SECRET}
    body = review(pod, uid="log-uid-1")
    allowed_body = review(workload("Pod", pod_spec("nginx")), uid="log-uid-2")
    with start_server() as server:
        client = server.client()
        assert client.review("/validate", body)["allowed"] is False
        assert client.review("/validate", allowed_body)["allowed"] is True
        client.close()
        time.sleep(0.2)
        logs = server.logs()
    assert SECRET not in logs
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert len(lines) == len(logs.strip().splitlines()), "every log line is JSON"
    (denial,) = [line for line in lines if line.get("uid") == "log-uid-1"]
    assert denial["decision"] == "denied" and denial["kind"] == "Pod" and denial["namespace"] == "shop"
    assert denial["name"] == "web" and denial["operation"] == "CREATE" and denial["code"] == 403
    assert denial["user"] == "system:serviceaccount:kube-system:replicaset-controller"
    assert "evil.io/x:1" in denial["reason"] and denial["durationMs"] > 0
    assert (denial["level"], denial["logger"], denial["msg"]) == ("info", "webhook.admission", "validate denied")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", denial["time"])
    assert abs(datetime.fromisoformat(denial["time"]).timestamp() - time.time()) < 60
    assert not [line for line in lines if line.get("uid") == "log-uid-2"], "allowed requests are not logged at info"
    assert any("admission-webhook" in line["msg"] and "sha256" in line["msg"] for line in lines)


@pytest.mark.parametrize("created", [1_700_000_000.999, 1_700_000_001.0005, 1_700_000_001.25, 1_800_000_000.5])
def test_json_log_time_is_utc_to_the_millisecond(created: float) -> None:
    formatter = JsonFormatter()
    formatter.format(logging.makeLogRecord({"created": 1_600_000_000.0, "msecs": 0.0}))  # a second remembered
    record = logging.makeLogRecord({"msg": "m", "created": created, "msecs": (created - int(created)) * 1000})
    stamp = datetime.fromtimestamp(int(created), UTC).strftime("%Y-%m-%dT%H:%M:%S")
    expected = f"{stamp}.{round((created - int(created)) * 1e6) // 1000:03d}+00:00"
    assert orjson.loads(formatter.format(record))["time"] == expected


def test_text_log_format(start_server: Any) -> None:
    with start_server("--log-format", "text") as server:
        client = server.client()
        client.review("/validate", pod_review("evil.io/x", uid="text-uid"))
        client.close()
        time.sleep(0.2)
        (line,) = [line for line in server.logs().splitlines() if "text-uid" in line]
        assert " INFO webhook.admission: validate denied " in line and "uid=text-uid" in line


FORGED = "\n2026-01-01 00:00:00,000 INFO webhook.admission: validate allowed uid=forged"


def test_text_log_lines_cannot_be_forged_or_grow_without_bound(start_server: Any, tmp_path: Path) -> None:
    """The mutating webhook sees names before the API server validates them; warn mode joins
    every warning into the line's reason."""
    policy = write_policy(tmp_path, "images: {mode: warn, allow: [ghcr.io/*]}\n")
    forged = pod_review("evil.io/x", uid="forge-1")
    forged["request"]["object"]["metadata"]["name"] = forged["request"]["name"] = "web" + FORGED
    forged["request"]["userInfo"]["username"] = 'alice\r\u2028mallory" user=root'
    huge = pod_review(*[f"evil.io/{i}/" + "x" * 150 for i in range(3000)], uid="huge-1")
    with start_server("--log-format", "text", "--policy", str(policy)) as server:
        for path in ("/validate", "/mutate"):
            client = server.client()
            assert client.review(path, forged)["allowed"] is True
            client.close()
        client = server.client()
        assert len(client.review("/validate", huge)["warnings"]) == 21  # 20 images named, and a count
        client.close()
        time.sleep(0.2)
        lines = server.logs().splitlines()  # splits on U+2028 and the other separators too
    assert not [line for line in lines if line.startswith("2026-01-01")]
    (line,) = [line for line in lines if "forged" in line]  # /mutate allowed it without a patch: no line
    assert "uid=forge-1 webhook=validate " in line and "decision=warned" in line
    assert f"name={json.dumps('web' + FORGED)} " in line
    assert ' user="alice\\r\\u2028mallory\\" user=root" ' in line
    (line,) = [line for line in lines if "uid=huge-1" in line]
    (length,) = re.findall(r"…\((\d+) chars\)", line)
    assert len(line) < 2 * FIELD_LIMIT and int(length) > 20 * 2 * 150


# --- deadlines -------------------------------------------------------------------------------

def huge_pod(uid: str) -> dict[str, Any]:
    return pod_review(*[f"ghcr.io/acme/app-{i}:1" for i in range(20_000)], uid=uid)


def test_an_overrun_is_denied_in_band_by_default(start_server: Any) -> None:
    with start_server("--eval-timeout", "0.001") as server:
        client = server.client()
        started = time.monotonic()
        response = client.review("/validate", huge_pod("slow-1"))
        assert time.monotonic() - started < 10  # well inside the API server's ?timeout=10s
        assert response["allowed"] is False
        assert response["status"]["code"] == 504 and response["status"]["reason"] == "Timeout"
        assert "denied by failureMode: deny" in response["status"]["message"]
        mutated = client.review("/mutate", huge_pod("slow-2"))
        assert mutated["allowed"] is True and mutated["warnings"] == ["mutation skipped: deadline exceeded"]
        assert "patch" not in mutated
        client.close()


def test_failure_mode_allow_allows_an_overrun_with_a_warning(start_server: Any, tmp_path: Path) -> None:
    policy = write_policy(tmp_path, "images: {allow: [ghcr.io/*]}\nfailureMode: allow\n")
    with start_server("--eval-timeout", "0.001", "--policy", str(policy)) as server:
        client = server.client()
        response = client.review("/validate", huge_pod("slow-3"))
        assert response["allowed"] is True
        assert response["warnings"] == ["not judged: policy evaluation exceeded its deadline; "
                                         "allowed by failureMode: allow"]
        assert client.review("/validate", pod_review("ghcr.io/acme/x"))["allowed"] is True  # small ones still fit
        client.close()


def test_the_api_server_timeout_shortens_the_budget(start_server: Any) -> None:
    with start_server("--eval-timeout", "30") as server:
        client = server.client()
        content = orjson.dumps(huge_pod("slow-4"))
        reply = client.request("POST", "/validate?timeout=1ms", content=content,
                               headers={"Content-Type": "application/json"})
        assert reply.json()["response"]["status"]["code"] == 504
        client.close()


def test_warn_mode_answers_a_7mb_object_in_time_with_capped_warnings(start_server: Any, tmp_path: Path) -> None:
    """45k containers, each image denied and unique: the warnings are capped as a denial is, and
    building, cleaning and sending them costs time linear in the object (it was 9 s, 5.6 MB)."""
    policy = write_policy(tmp_path, "images: {mode: warn, allow: [registry.k8s.io]}\n")
    body = pod_review(*[f"evil.io/app-{i}:1" for i in range(45_000)], uid="warn-7mb")
    content = orjson.dumps(body)
    assert 6_500_000 < len(content) < 8 * 1024 * 1024
    with start_server("--policy", str(policy)) as server:
        client = server.client()
        client.review("/validate", pod_review("evil.io/warm-up:1"))
        with attack(server) as figures:
            started = time.monotonic()
            reply = client.post("/validate", content)
            elapsed = time.monotonic() - started
        client.close()
        assert_survived(server, figures)
    response = reply.json()["response"]
    assert response["allowed"] is True and "status" not in response
    assert len(response["warnings"]) == 21
    assert response["warnings"][0] == ('policy would deny (warn mode): spec.containers[0] "c0": '
                                       'image "evil.io/app-0:1" (evil.io/app-0:1) is not from an allowed registry')
    assert response["warnings"][-1] == "policy would deny (warn mode): and 44980 more"
    assert len(reply.content) < 5000
    assert elapsed < 1.5, f"answered in {elapsed:.2f} s"


HEAVY_DEFAULTS = """\
images:
  allow: [registry.k8s.io, mirror.acme.io/*]
  rewrite: [{from: docker.io, to: mirror.acme.io/dockerhub}]
defaults:
  - group: ""
    versions: [v1]
    kinds: [Pod]
    set:
      spec:
        containers[*]:
          imagePullPolicy: IfNotPresent
          terminationMessagePolicy: FallbackToLogsOnError
          securityContext:
            allowPrivilegeEscalation: false
            runAsNonRoot: true
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
            seccompProfile: {type: RuntimeDefault}
          resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 256Mi}}
          livenessProbe: {tcpSocket: {port: 8080}, periodSeconds: 10, timeoutSeconds: 1, failureThreshold: 3}
          env: [{name: TZ, value: UTC}, {name: LANG, value: C.UTF-8}]
"""


def nearly_defaulted_pod(count: int, uid: str) -> dict[str, Any]:
    """A Pod of ``count`` containers that HEAVY_DEFAULTS has already filled but for one field each:
    defaulting it walks the whole rule in every container and changes one field in each."""
    heavy = parse_policy(HEAVY_DEFAULTS.encode(), "heavy")
    one = pod_review("registry.k8s.io/pause:3.9", uid=uid)
    filled = applied(one["request"]["object"], list(mutate(decode_review(orjson.dumps(one)), heavy, NEVER).patch))
    template = filled["spec"]["containers"][0]
    template.pop("imagePullPolicy")
    one["request"]["object"]["spec"]["containers"] = [{**template, "name": f"c{i}"} for i in range(count)]
    return one


def test_mutation_stops_at_its_deadline_inside_the_work(start_server: Any, tmp_path: Path) -> None:
    """8,000 nearly defaulted containers take a third of a second to default and diff; with a
    0.1 s deadline the mutating webhook checks it inside each loop and skips in time. Only the
    clock between the loops was read before, so the answer came when the work was done."""
    policy = write_policy(tmp_path, HEAVY_DEFAULTS)
    content = orjson.dumps(nearly_defaulted_pod(8000, "mutate-8k"))
    with start_server("--policy", str(policy), "--eval-timeout", "0.1") as server:
        client = server.client()
        started = time.monotonic()
        reply = client.post("/mutate", content)
        elapsed = time.monotonic() - started
        client.close()
    assert reply.json()["response"] == {"uid": "mutate-8k", "allowed": True,
                                        "warnings": ["mutation skipped: deadline exceeded"]}
    assert elapsed < 1.0, f"answered in {elapsed:.2f} s"


def test_each_loop_of_a_mutation_stops_when_its_deadline_says_so() -> None:
    heavy = parse_policy(HEAVY_DEFAULTS.encode(), "heavy")
    obj = nearly_defaulted_pod(200, "ticks")["request"]["object"]
    calls = 0

    def tick() -> None:
        nonlocal calls
        calls += 1
        if calls == 50:
            raise DeadlineExceeded

    with pytest.raises(DeadlineExceeded):
        apply_defaults(heavy.defaults.rules[0].tree, copy.deepcopy(obj), tick=tick)
    changed = copy.deepcopy(obj)
    for container in changed["spec"]["containers"]:
        container["imagePullPolicy"] = "IfNotPresent"
    calls = 0
    with pytest.raises(DeadlineExceeded):
        diff(obj, changed, tick=tick)
    calls = 0
    with pytest.raises(DeadlineExceeded):
        rewrite_images(heavy.rewriter, copy.deepcopy(obj), ("spec",), frozenset({"containers"}), set(), tick=tick)


def test_fifty_thousand_containers_under_a_containers_default_are_not_mutated(start_server: Any,
                                                                              tmp_path: Path) -> None:
    """A ``containers[*]`` default copies its values into every container: 50,000 of them made a
    patch of tens of MB, and took 3.5 s against a 2 s deadline. Past 10,000 changes the object is
    left as it is, at once, and the validating webhook judges it so."""
    policy = write_policy(tmp_path, HEAVY_DEFAULTS)
    body = pod_review("nginx", uid="mutate-50k")
    body["request"]["object"]["spec"]["containers"] = [{"name": f"c{i}", "image": f"nginx:{i}"} for i in range(50_000)]
    with start_server("--policy", str(policy)) as server:
        client = server.client()
        with attack(server, image="registry.k8s.io/pause:3.9") as figures:
            started = time.monotonic()
            response = client.review("/mutate", body)
            elapsed = time.monotonic() - started
        small = pod_review("nginx:1.27", uid="mutate-small")
        answered = client.review("/mutate", small)
        client.close()
        assert_survived(server, figures)
    assert response == {"uid": "mutate-50k", "allowed": True,
                        "warnings": ["mutation skipped: it would make more than 10000 changes"]}
    assert elapsed < 2.0, f"answered in {elapsed:.2f} s"
    operations = decoded_patch(answered)
    assert {"op": "replace", "path": "/spec/containers/0/image",
            "value": "mirror.acme.io/dockerhub/library/nginx:1.27"} in operations
    assert 'rewrote spec.containers[0] "c0" image "nginx:1.27" to mirror.acme.io/dockerhub/library/nginx:1.27' \
        in answered["warnings"]


def test_a_ticker_reads_the_clock_on_every_nth_call_only() -> None:
    tick = Deadline(time.monotonic() - 1).ticker(every=4)  # already due
    for _ in range(3):
        tick()
    with pytest.raises(DeadlineExceeded):
        tick()
    never = NEVER.ticker(every=1)
    for _ in range(100):
        never()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("1.5s", 1.5), ("", None), ("10", None),
     ("s", None), ("10x", None), ("10s5", None)],
)
def test_go_durations(text: str, seconds: float | None) -> None:
    assert parse_go_duration(text) == seconds


def test_budget_keeps_a_margin_and_the_cap() -> None:
    assert budget("10s", 2.0, 0.5) == 2.0  # --eval-timeout is smaller
    assert budget("1s", 2.0, 0.5) == 0.5  # the API server's timeout less the margin
    assert budget("200ms", 2.0, 0.5) == 0.1  # never more than half of a short timeout as margin
    assert budget(None, 2.0, 0.5) == 2.0
    assert budget("garbage", 2.0, 0.5) == 2.0


def test_a_flood_of_kinds_is_counted_in_full_under_a_bounded_set_of_labels(start_server: Any) -> None:
    """Kinds come from requests: the first 100 get their own label, the rest and any odd one
    count as "other", the same way each time a kind comes back."""
    kinds = [f"Widget{i}" for i in range(130)] + ["not-a-Kind"]
    with start_server() as server:
        client = server.client()
        for _ in range(2):
            for kind in kinds:
                widget = review({"kind": kind, "metadata": {"name": "w"}}, kind=kind)
                assert client.review("/validate", widget)["allowed"]
        client.close()
        time.sleep(0.2)
        text = httpx.get(f"http://127.0.0.1:{server.probe_port}/metrics").text
    requests = "webhook_admission_requests_total"
    labels = dict(webhook="validate", operation="CREATE", decision="allowed", mode="enforce", scope="baseline")
    counted = {kind: metric(text, requests, kind=kind, **labels) for kind in [*kinds, "other"]}
    assert all(counted[f"Widget{i}"] == 2 for i in range(100))
    assert all(counted[f"Widget{i}"] == 0 for i in range(100, 130))
    assert counted["not-a-Kind"] == 0
    assert counted["other"] == 2 * 31
    assert sum(counted.values()) == 2 * len(kinds)


def test_registry_labels_come_from_the_policy_in_force(start_server: Any, tmp_path: Path) -> None:
    """Junk from requests, however much and however early, never takes a real registry's label."""
    junk = [f"reg{i}.example.com" for i in range(150)]
    path = write_policy(tmp_path, "images:\n  allow: [ghcr.io/acme/*, registry.k8s.io]\n"
                                  "  rewrite: [{from: quay.io/acme, to: ghcr.io/acme/quay}]\n")
    with start_server("--policy", str(path), "--reload-interval", "0.1") as server:
        client = server.client()
        for registry in junk:
            assert not client.review("/validate", pod_review(f"{registry}/app:1"))["allowed"]
        for image in ("ghcr.io/not-acme/x", "quay.io/other/x", "Bad/Ref"):
            assert not client.review("/validate", pod_review(image))["allowed"]
        before = httpx.get(f"http://127.0.0.1:{server.probe_port}/metrics").text
        # The next policy names harbor.acme.io and no longer names registry.k8s.io or quay.io.
        first = _default_hash(server)
        write_policy(tmp_path, "images: {allow: [ghcr.io/acme/*, harbor.acme.io/team/*]}\n")
        assert eventually(lambda: _default_hash(server) != first)
        for image in ("harbor.acme.io/other/x", "quay.io/other/x", "registry.k8s.io/pause", junk[0]):
            assert not client.review("/validate", pod_review(image))["allowed"]
        client.close()
        time.sleep(0.2)
        after = httpx.get(f"http://127.0.0.1:{server.probe_port}/metrics").text
    violations = "webhook_image_violations_total"

    def counts(text: str, *registries: str) -> list[float]:
        return [metric(text, violations, registry=registry) for registry in registries]

    assert counts(before, "ghcr.io", "quay.io", "invalid", "other") == [1, 1, 1, 150]
    assert not [line for line in before.splitlines() if line.startswith(violations) and "example.com" in line]
    assert counts(after, "harbor.acme.io", "quay.io", "registry.k8s.io", "other") == [1, 1, 0, 153]
