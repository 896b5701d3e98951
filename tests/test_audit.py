"""`webhook audit` against the stand-in API server, found only through a kubeconfig file written here.

One-shot audits run the command's parser and handler in this process (fast); watches run the
real command as a process, read its output line by line as it is flushed, and stop it with a
signal, as a user or a pod's kubelet does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apiserver import WEBHOOK_RULES, ApiServer, Request, Rule, docs_cluster, without, write_kubeconfig
from tests.conftest import REPO, write_policy
from tests.docs import UIDS, Process, Sandbox, doc_block, match, run_block
from tests.reviews import pod_spec, workload
from webhook.cli import build_parser
from webhook.kube import commands as kube_commands

BAD = 'image "evil.io/x:1" (evil.io/x:1) is not from an allowed registry'
ALLOWED = "allowed: registry.k8s.io, docker.io/library/*, ghcr.io/*, quay.io/*"
PATHS = ["/api/v1/pods", "/api/v1/podtemplates", "/api/v1/replicationcontrollers", "/apis/apps/v1/deployments",
         "/apis/apps/v1/replicasets", "/apis/apps/v1/statefulsets", "/apis/apps/v1/daemonsets",
         "/apis/batch/v1/jobs", "/apis/batch/v1/cronjobs"]
WAIT = 15.0


def env_for(apiserver: ApiServer, tmp_path: Path, user: str, *rules: Rule) -> dict[str, str]:
    """A user with these rules, and the environment of someone whose kubeconfig holds their token."""
    apiserver.add_user(user, f"{user}-token", *rules)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)  # no ~/.kube/config: never the developer's own cluster
    kubeconfig = write_kubeconfig(tmp_path / f"{user}.kubeconfig", apiserver.url, {"token": f"{user}-token"},
                                  ca_file=apiserver.ca_file)
    return {"PATH": os.environ["PATH"], "HOME": str(home), "KUBECONFIG": str(kubeconfig)}


@pytest.fixture
def auditor(apiserver: ApiServer, tmp_path: Path) -> dict[str, str]:
    return env_for(apiserver, tmp_path, "auditor", *WEBHOOK_RULES)


def audit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`webhook audit ARGS` through the real parser and handler, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = kube_commands.run(build_parser().parse_args(["audit", *args]), env)
    return subprocess.CompletedProcess(["webhook", "audit", *args], code, out.getvalue(), err.getvalue())


def pod(name: str, image: str, namespace: str = "team", **labels: str) -> dict[str, Any]:
    obj = workload("Pod", pod_spec(image), name=name, namespace=namespace)
    obj["metadata"]["labels"].update(labels)
    return obj


def denial(field: str, image: str = "evil.io/x:1") -> str:
    return f'{field} "c0": image "{image}" ({image}) is not from an allowed registry; {ALLOWED}'


# --- list ----------------------------------------------------------------------------------------

def test_audit_lists_every_kind_page_by_page_and_reports_each_violation(
    apiserver: ApiServer, auditor: dict[str, str]
) -> None:
    for i in range(7):  # four pages of two
        apiserver.store.put("pods", pod(f"p{i}", "evil.io/x:1" if i in (0, 3, 6) else "nginx:1.27"))
    apiserver.store.put("pods", pod("sys", "evil.io/x:1", namespace="kube-system"))  # exempt
    apiserver.store.put("cronjobs.batch", workload("CronJob", pod_spec("evil.io/x:1"), name="nightly"))
    apiserver.store.put("deployments.apps", workload("Deployment", pod_spec("ghcr.io/acme/app:1"), name="ok"))

    result = audit("--chunk-size", "2", env=auditor)
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["KIND", "NAMESPACE/NAME", "DECISION", "MESSAGES"]
    rows = [line.split(None, 3) for line in lines[1:-2]]
    assert lines[-2] == ""
    assert rows == [["Pod", "team/p0", "denied", denial("spec.containers[0]")],
                    ["Pod", "team/p3", "denied", denial("spec.containers[0]")],
                    ["Pod", "team/p6", "denied", denial("spec.containers[0]")],
                    ["CronJob", "shop/nightly", "denied", denial("spec.jobTemplate.spec.template.spec.containers[0]")]]
    assert lines[-1] == "audited 10 objects of 9 kinds in all namespaces: 4 denied, 0 warned"

    pages = apiserver.lists("/api/v1/pods")
    assert [s.query["limit"] for s in pages] == ["2"] * 4  # 8 pods: kube-system/sys, team/p0..p6
    assert "continue" not in pages[0].query and all("continue" in s.query for s in pages[1:])
    assert len({s.query["continue"] for s in pages[1:]}) == 3
    assert [s.path for s in apiserver.seen("GET")] == ["/api/v1/pods"] * 4 + PATHS[1:]  # every kind, no watch


def test_json_gives_one_object_per_line_with_the_servers_status(apiserver: ApiServer, auditor: dict[str, str]) -> None:
    stored = apiserver.store.put("pods", pod("bad", "evil.io/x:1"))
    result = audit("-o", "json", env=auditor)
    assert result.returncode == 1
    (line,) = result.stdout.splitlines()
    assert json.loads(line) == {
        "event": "LISTED", "apiVersion": "v1", "kind": "Pod", "namespace": "team", "name": "bad",
        "uid": stored["metadata"]["uid"], "decision": "denied", "warnings": [], "scope": None, "exceptions": [],
        "status": {"code": 403, "reason": "Forbidden", "message": denial("spec.containers[0]")}}
    assert result.stderr == "webhook: audited 1 object of 9 kinds in all namespaces: 1 denied, 0 warned\n"


def test_a_clean_cluster_exits_0_and_warn_mode_reports_without_failing(
    apiserver: ApiServer, auditor: dict[str, str], tmp_path: Path
) -> None:
    apiserver.store.put("pods", pod("fine", "registry.k8s.io/pause:3.9"))
    apiserver.store.put("pods", pod("exempt", "evil.io/x:1", namespace="kube-system"))
    clean = audit(env=auditor)
    assert clean.returncode == 0
    assert clean.stdout == "audited 2 objects of 9 kinds in all namespaces: 0 denied, 0 warned\n"

    policy = write_policy(tmp_path, "images:\n  mode: warn\n  allow: [quay.io/*]\nexemptNamespaces: [kube-system]\n")
    warned = audit("--policy", str(policy), "-o", "json", env=auditor)
    assert warned.returncode == 0
    (line,) = [json.loads(line) for line in warned.stdout.splitlines()]
    assert (line["name"], line["decision"], line["status"]) == ("fine", "warned", None)
    assert line["warnings"] == ['policy would deny (warn mode): spec.containers[0] "c0": image "registry.k8s.io/'
                                'pause:3.9" (registry.k8s.io/pause:3.9) is not from an allowed registry']


def test_image_volumes_and_image_ids_are_audited_as_the_server_judges_them(
    apiserver: ApiServer, auditor: dict[str, str], tmp_path: Path
) -> None:
    image_id = "sha256:" + "c0" * 32
    apiserver.store.put("pods", workload("Pod", pod_spec("nginx", volumes=("evil.io/x:1",)), name="vol",
                                             namespace="team"))
    apiserver.store.put("pods", workload("Pod", pod_spec("nginx", volumes=("evil.io/x:1",)), name="sys",
                                             namespace="kube-system"))  # exempt
    apiserver.store.put("deployments.apps", workload("Deployment", pod_spec("nginx", volumes=("quay.io/t",)),
                                                         name="fine"))
    apiserver.store.put("deployments.apps", workload("Deployment", pod_spec(image_id), name="by-id"))
    apiserver.store.put("cronjobs.batch", workload("CronJob", pod_spec("nginx", volumes=(image_id,)), name="c"))

    result = audit("-o", "json", env=auditor)
    assert result.returncode == 1, result.stderr
    found = {(r["kind"], r["name"]): (r["decision"], r["status"]["message"])
             for r in map(json.loads, result.stdout.splitlines())}
    id_problem = ("is an image ID, not an image reference: the runtime would run whatever image on the node has "
                  "this ID; name the image as repository@sha256:...")
    assert found == {
        ("Pod", "vol"): ("denied", 'spec.volumes[1].image.reference volume "v0": image "evil.io/x:1" (evil.io/x:1) '
                                   f"is not from an allowed registry; {ALLOWED}"),
        ("Deployment", "by-id"): ("denied", f'spec.template.spec.containers[0] "c0": image "{image_id}" {id_problem}'),
        ("CronJob", "c"): ("denied", 'spec.jobTemplate.spec.template.spec.volumes[1].image.reference volume "v0": '
                                     f'image "{image_id}" {id_problem}'),
    }

    policy = write_policy(tmp_path, "images:\n  mode: warn\n  allow: [docker.io/*]\nexemptNamespaces: [kube-system]\n")
    warned = audit("--policy", str(policy), "-o", "json", env=auditor)
    assert warned.returncode == 0
    records = {r["name"]: r for r in map(json.loads, warned.stdout.splitlines())}
    assert sorted(records) == ["by-id", "c", "fine", "vol"]
    assert {r["decision"] for r in records.values()} == {"warned"}
    assert records["vol"]["warnings"] == ['policy would deny (warn mode): spec.volumes[1].image.reference volume "v0": '
                                          'image "evil.io/x:1" (evil.io/x:1) is not from an allowed registry']
    (long,) = records["c"]["warnings"]  # cut at the 256 characters a warning may hold
    assert long == ('policy would deny (warn mode): spec.jobTemplate.spec.template.spec.volumes[1].image.reference '
                    f'volume "v0": image "{image_id}" {id_problem}')[:255] + "…"


def test_an_expired_continue_goes_on_with_the_token_the_server_gives(
    apiserver: ApiServer, auditor: dict[str, str]
) -> None:
    for i in range(6):
        apiserver.store.put("pods", pod(f"p{i}", "evil.io/x:1"))

    def compact_before_the_second_page(request: Request) -> None:
        if request.path == "/api/v1/pods" and request.query.get("continue") and not apiserver.store.compacted:
            apiserver.store.put("pods", pod("late", "evil.io/x:1", namespace="zz"))  # a write, then
            apiserver.store.compact()  # etcd compacts past the token's snapshot while we page

    apiserver.interceptors.append(compact_before_the_second_page)
    result = audit("--chunk-size", "2", "-o", "json", env=auditor)
    assert result.returncode == 1, result.stderr
    names = [json.loads(line)["name"] for line in result.stdout.splitlines()]
    assert names == [f"p{i}" for i in range(6)] + ["late"]  # each once; the rest from the newer snapshot
    assert [s.status for s in apiserver.lists("/api/v1/pods")] == [200, 410, 200, 200, 200]


def test_an_expired_continue_without_a_token_starts_again_and_skips_what_was_judged(
    apiserver: ApiServer, auditor: dict[str, str]
) -> None:
    for i in range(5):
        apiserver.store.put("pods", pod(f"p{i}", "evil.io/x:1"))
    refused: list[str] = []

    def expire_once(request: Request) -> Any:
        if request.path == "/api/v1/pods" and request.query.get("continue") and not refused:
            refused.append(request.query["continue"])
            return 410, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                         "message": "too old", "reason": "Expired", "code": 410}
        return None

    apiserver.interceptors.append(expire_once)
    result = audit("--chunk-size", "2", "-o", "json", env=auditor)
    assert [json.loads(line)["name"] for line in result.stdout.splitlines()] == [f"p{i}" for i in range(5)]
    assert ["continue" in s.query for s in apiserver.lists("/api/v1/pods")] == [False, True, False, True, True]


def test_one_namespace_needs_only_that_namespaces_permissions(apiserver: ApiServer, tmp_path: Path) -> None:
    rules = [Rule(("list",), (r,), (g,), namespaces=("team",)) for g, r in
             [("", "pods"), ("", "podtemplates"), ("", "replicationcontrollers"), ("apps", "deployments"),
              ("apps", "replicasets"), ("apps", "statefulsets"), ("apps", "daemonsets"), ("batch", "jobs"),
              ("batch", "cronjobs")]]
    env = env_for(apiserver, tmp_path, "dev", *rules)
    apiserver.store.put("pods", pod("bad", "evil.io/x:1"))
    apiserver.store.put("pods", pod("elsewhere", "evil.io/x:1", namespace="other"))
    result = audit("-n", "team", env=env)
    assert result.returncode == 1, result.stderr
    assert [line.split()[1] for line in result.stdout.splitlines()[1:-2]] == ["team/bad"]
    assert result.stdout.splitlines()[-1].startswith("audited 1 object of 9 kinds in namespace team")
    assert apiserver.lists("/api/v1/namespaces/team/pods")
    assert audit(env=env).returncode == 3  # cluster-wide is another matter


# --- preflight -----------------------------------------------------------------------------------

def test_missing_list_permission_stops_at_preflight(apiserver: ApiServer, tmp_path: Path) -> None:
    env = env_for(apiserver, tmp_path, "ci", *without(WEBHOOK_RULES, "list", "cronjobs"))
    apiserver.store.put("pods", pod("bad", "evil.io/x:1"))
    result = audit(env=env)
    assert result.returncode == 3
    assert result.stdout == ""
    who = f"user 'tester' of context 'stand-in' in {env['KUBECONFIG']}"
    assert result.stderr == (f"webhook: error: cannot audit: {who} is missing 1 permission(s):\n"
                             "  - list cronjobs.batch cluster-wide\n")
    assert {s.method for s in apiserver.seen()} == {"POST"}  # access reviews only: nothing was listed


def test_watch_permission_is_asked_for_only_with_watch(apiserver: ApiServer, tmp_path: Path) -> None:
    env = env_for(apiserver, tmp_path, "lister", *without(WEBHOOK_RULES, "watch", "pods"))
    assert audit(env=env).returncode == 0
    listed = len(apiserver.seen("GET"))
    watching = audit("--watch", env=env)
    assert watching.returncode == 3
    assert watching.stderr.endswith("is missing 1 permission(s):\n  - watch pods cluster-wide\n")
    assert len(apiserver.seen("GET")) == listed  # nothing listed or watched this time


# --- watch ---------------------------------------------------------------------------------------

class Watching:
    """`webhook audit --watch -o json` as a process; its lines are read as they are flushed."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "webhook", "audit", "--watch", "-o", "json", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def next(self, timeout: float = WAIT) -> dict[str, Any]:
        try:
            return json.loads(self.lines.get(timeout=timeout))  # type: ignore[no-any-return]
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s; stderr so far:\n{self.stop(signal.SIGKILL)}") from None

    def quiet(self, seconds: float = 0.5) -> bool:
        """Nothing more was printed for a while."""
        try:
            line = self.lines.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected line: {line}")

    def stop(self, sig: int = signal.SIGINT) -> str:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            _, self.stderr = self.process.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, self.stderr = self.process.communicate()
        return self.stderr


@pytest.fixture
def watching(auditor: dict[str, str]) -> Iterator[Callable[..., Watching]]:
    started: list[Watching] = []

    def start(*args: str) -> Watching:
        started.append(Watching(auditor, *args))
        return started[-1]

    yield start
    for each in started:
        each.stop(signal.SIGKILL)


def until(probe: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def event(line: dict[str, Any]) -> tuple[str, str, str]:
    return line["event"], line["name"], line["decision"]


def test_watch_reports_added_modified_and_deleted_and_follows_bookmarks(
    apiserver: ApiServer, watching: Callable[..., Watching]
) -> None:
    store = apiserver.store
    old = store.put("pods", pod("old", "evil.io/x:1"))
    audit_ = watching()
    assert event(audit_.next()) == ("LISTED", "old", "denied")
    until(lambda: all(store.watching(p) for p in ("pods", "cronjobs.batch")), "the watches")
    # The watch starts where the list was: the list's resourceVersion, here old's own.
    assert apiserver.watches("/api/v1/pods")[0].query["resourceVersion"] == old["metadata"]["resourceVersion"]

    store.put("pods", pod("new", "evil.io/x:1"))
    assert event(audit_.next()) == ("ADDED", "new", "denied")
    store.put("pods", pod("new", "evil.io/x:1", tier="web"))  # a label: the same violation, not reported again
    store.put("pods", pod("new", "evil.io/y:2"))  # another image: a new message
    line = audit_.next()
    assert event(line) == ("MODIFIED", "new", "denied")
    assert line["status"]["message"] == denial("spec.containers[0]", "evil.io/y:2")
    store.put("pods", pod("new", "nginx:1.27"))
    assert event(audit_.next()) == ("RESOLVED", "new", "allowed")
    store.put("pods", pod("fine", "nginx:1.27"))  # never in violation: nothing to say
    store.delete("pods", "team", "fine")
    store.delete("pods", "team", "old")
    assert event(audit_.next()) == ("DELETED", "old", "deleted")
    assert audit_.quiet()

    # Writes elsewhere move the cluster's resourceVersion on; a BOOKMARK tells the pod watch.
    store.put("deployments.apps", workload("Deployment", pod_spec("nginx"), name="web"))
    marked = store.bookmark("pods")
    store.compact()  # so that resuming from anything older than the bookmark would be 410 Gone
    until(lambda: store.delivered("pods") == marked, "the bookmark to be sent")
    store.drop_watches("pods")
    resumed = until(lambda: apiserver.watches("/api/v1/pods")[1:], "a second pod watch")
    assert resumed[0].query["resourceVersion"] == str(marked)
    assert resumed[0].query["allowWatchBookmarks"] == "true"
    assert len(apiserver.lists("/api/v1/pods")) == 1  # no list again: the bookmark kept us current
    assert audit_.quiet()
    stderr = audit_.stop()
    assert stderr.startswith(f"webhook: warning: watch of pods failed: GET /api/v1/pods (watch) from {apiserver.url}: "
                             "peer closed connection without sending complete message body (incomplete chunked read); "
                             f"resuming from resourceVersion {marked} in ")
    assert audit_.process.returncode == 0


@contextlib.contextmanager
def watches_refused(apiserver: ApiServer, path: str) -> Iterator[list[int]]:
    """While inside, watches of ``path`` get 503, as an overloaded API server answers; counts the attempts."""
    attempts: list[int] = []

    def refuse(request: Request) -> Any:
        if request.path == path and request.query.get("watch") == "true":
            attempts.append(1)
            return 503, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                         "message": "the server is currently unable to handle the request", "reason":
                         "ServiceUnavailable", "code": 503}
        return None

    apiserver.interceptors.append(refuse)
    try:
        yield attempts
    finally:
        apiserver.interceptors.remove(refuse)


def test_a_dropped_stream_reconnects_from_the_last_version_and_misses_nothing(
    apiserver: ApiServer, watching: Callable[..., Watching]
) -> None:
    store = apiserver.store
    audit_ = watching()
    until(lambda: store.watching("pods"), "the pod watch")
    first = store.put("pods", pod("a", "evil.io/x:1"))
    assert event(audit_.next()) == ("ADDED", "a", "denied")
    with watches_refused(apiserver, "/api/v1/pods") as attempts:
        store.drop_watches("pods")
        store.put("pods", pod("b", "evil.io/x:1"))  # while no one watches
        until(lambda: attempts, "an attempt to reconnect")
    assert event(audit_.next()) == ("ADDED", "b", "denied")  # replayed after the reconnect
    resumed = [w for w in apiserver.watches("/api/v1/pods") if w.status == 200][1:]
    assert [w.query["resourceVersion"] for w in resumed] == [first["metadata"]["resourceVersion"]]
    assert audit_.quiet()  # "a" is not reported twice
    stderr = audit_.stop(signal.SIGTERM)
    assert "watch of pods failed: GET /api/v1/pods (watch) from" in stderr
    assert "the Kubernetes API answered GET /api/v1/pods (watch) with 503 ServiceUnavailable" in stderr
    assert audit_.process.returncode == 0  # SIGTERM ends a watch cleanly


def test_410_gone_lists_again_and_reports_what_changed_unseen(
    apiserver: ApiServer, watching: Callable[..., Watching]
) -> None:
    store = apiserver.store
    store.put("pods", pod("stays", "evil.io/x:1"))
    store.put("pods", pod("goes", "evil.io/x:1"))
    audit_ = watching()
    assert {event(audit_.next()) for _ in range(2)} == {("LISTED", "stays", "denied"), ("LISTED", "goes", "denied")}
    until(lambda: store.watching("pods"), "the pod watch")
    with watches_refused(apiserver, "/api/v1/pods") as attempts:
        store.drop_watches("pods")
        # While the watch is down, etcd compacts past where it was: the history it needs is gone.
        store.delete("pods", "team", "goes")
        store.put("pods", pod("came", "evil.io/x:1"))
        compacted = store.compact()
        until(lambda: attempts, "an attempt to reconnect")
    lines = {event(audit_.next()) for _ in range(2)}
    assert lines == {("DELETED", "goes", "deleted"), ("LISTED", "came", "denied")}
    assert audit_.quiet()  # "stays" was reported once, at the first list
    assert len(apiserver.lists("/api/v1/pods")) == 2
    assert apiserver.watches("/api/v1/pods")[-1].query["resourceVersion"] == str(compacted)  # the new list's
    assert "watch of pods expired (410 Gone); listing again" in audit_.stop()


def test_a_410_from_the_server_mid_watch_lists_again(apiserver: ApiServer, watching: Callable[..., Watching]) -> None:
    store = apiserver.store
    audit_ = watching()
    until(lambda: store.watching("replicasets.apps"), "the replicaset watch")
    store.expire_watches("replicasets.apps")  # an ERROR event with a 410 Status, then the end
    until(lambda: len(apiserver.lists("/apis/apps/v1/replicasets")) == 2, "a second list")
    until(lambda: len(apiserver.watches("/apis/apps/v1/replicasets")) == 2, "a new watch")
    assert "watch of replicasets.apps expired (410 Gone); listing again" in audit_.stop()


# --- the docs -------------------------------------------------------------------------------------

@pytest.fixture
def docs_sandbox(tmp_path: Path) -> Iterator[tuple[Sandbox, ApiServer]]:
    """The stand-in as `python -m tests.apiserver` runs it, in a sandbox with $KUBECONFIG set to jane's."""
    sandbox = Sandbox.make(tmp_path)
    server = docs_cluster(sandbox.cwd / "stand-in")
    sandbox.env["KUBECONFIG"] = str(sandbox.cwd / "stand-in" / "kubeconfig")
    yield sandbox, server
    server.stop()


def test_the_docs_show_real_audit_output(docs_sandbox: tuple[Sandbox, ApiServer]) -> None:
    sandbox, _ = docs_sandbox
    run_block(doc_block("docs/cluster.md", "audit"), sandbox, normalisers=(UIDS,))
    run_block(doc_block("docs/cluster.md", "audit-refused"), sandbox)


def test_the_docs_watch_example(docs_sandbox: tuple[Sandbox, ApiServer]) -> None:
    """Started as shown; then, as the docs tell, shop/debug comes with a bad image, is fixed, and a
    Pod that was listed is deleted; Ctrl-C ends it."""
    sandbox, server = docs_sandbox
    block = doc_block("docs/cluster.md", "audit-watch")
    (step,) = block.steps
    assert step.output[-1] == "^C"
    shown = step.output[:-1]
    watch = Process(step.command, sandbox)
    try:
        def printed(lines: int) -> None:
            until(lambda: len(watch.output().splitlines()) >= lines, f"{lines} lines")

        printed(4)  # the header and three violations listed
        until(lambda: server.store.watching("pods"), "the pod watch")
        server.store.put("pods", workload("Pod", pod_spec("evil.io/miner:latest"), name="debug", namespace="shop"))
        printed(5)
        server.store.put("pods", workload("Pod", pod_spec("nginx:1.27"), name="debug", namespace="shop"))
        printed(6)
        server.store.delete("pods", "shop", "legacy-7d9f8-x2x4q")
        printed(7)
    finally:
        assert watch.stop() == 0
    match(shown, watch.output(), what=block.where)
