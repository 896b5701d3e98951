"""The webhook benchmark: the real server over TLS on loopback, driven by wrk with HTTP/1.1
keep-alive, side by side with a do-nothing FastAPI app (the framework floor).

    python bench/run.py            # full run, about 13 minutes on 2 cores
    python bench/run.py --tiny     # a few seconds: only proves the benchmark works
    python bench/run.py --only scopes   # only the scopes row, about 2 minutes

Runs are interleaved and repeated; medians are reported with min and max. Server CPU time
comes from /proc, so it counts the server's process tree only, not wrk. wrk shares the
machine's cores, and a virtual machine may lose some of them to its host (steal), so each
run also reports wrk's own CPU per request and the machine's steal time, and the summary
after the table works out what those allow.

The scopes row judges one allowed Pod CREATE, in the namespace of the last of 1,000 scopes,
under a policy with 1,000 scopes and 1,000 exceptions and under the same baseline with none,
two servers side by side and their runs interleaved. The bound the scopes specification
sets: the scoped request may cost at most 1.1× the other (server CPU per request), and the
run says whether it did. The same two decisions are also timed in this process, without TLS or HTTP, where
the difference is not lost in the noise of the rest.

A last table times ``webhook check`` over a corpus of manifests (bench/corpus.py) against
libyaml's C loader alone reading the same files, in the same process and interleaved, so
their ratio holds on a machine whose speed drifts.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import yaml

from bench import bodies, corpus
from webhook import check
from webhook.admission.deadline import NEVER
from webhook.admission.review import decode_review, encode_response
from webhook.admission.webhook import VALIDATING
from webhook.certs import ensure_certificates
from webhook.manifests import read
from webhook.policy import kubeyaml
from webhook.policy.model import load_policy, parse_policy

SERVICE_HOST = "admission-webhook.admission-webhook.svc"
# One connection, so no request waits for another: what is left of its tail is the machine's.
LONE = "pod-allowed, 1 connection"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The check benchmark's yardstick: PyYAML's own C loader, with nothing of ours (pure Python without libyaml).
BARE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# The scopes row: the spec's policy size, and the bound on what the scopes may add to a request.
SCOPES, EXCEPTIONS = 1000, 1000
SCOPED = f"{SCOPES:,} scopes, {EXCEPTIONS:,} exceptions"
UNSCOPED = "no scopes"
SCOPES_BOUND = 1.1


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    cpu_us: float
    errors: int
    wrk_cpu_us: float = 0.0  # the load generator's CPU per request, on the same cores
    steal_pct: float = 0.0  # of the machine's CPU time, taken by the host during the run


@dataclass
class Row:
    case: str
    server: str
    workers: int
    samples: list[Sample] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    peak_rss_per_process_mb: float = 0.0
    ready_s: float = 0.0

    def median(self, name: str) -> float:
        return statistics.median(getattr(s, name) for s in self.samples)

    def spread(self, name: str) -> tuple[float, float]:
        values = [getattr(s, name) for s in self.samples]
        return min(values), max(values)


def ensure_wrk() -> str:
    """wrk comes from Debian's packages; install it when it is missing and we may."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    if not found:
        sys.exit("bench: wrk is not installed; run `apt-get install wrk` as root")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree = [root]
    for pid in tree:
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLOCK_TICKS


def machine_ticks() -> tuple[int, int]:
    """(all, steal) CPU ticks of the machine so far: user nice system idle iowait irq softirq steal."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields), fields[7]


def children_cpu_seconds() -> float:
    """CPU time of the children already waited for, such as each finished wrk."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb(pids: list[int]) -> tuple[float, float]:
    """(sum over the tree, largest single process) of VmHWM, in MB."""
    peaks = []
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        except OSError:
            continue
    return sum(peaks), max(peaks, default=0.0)


class Server:
    def __init__(self, name: str, command: list[str], port: int, cert_dir: Path) -> None:
        self.name = name
        self.port = port
        started = time.monotonic()
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.ready_s = self._wait_ready(cert_dir, started)

    def _wait_ready(self, cert_dir: Path, started: float) -> float:
        context = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
        deadline = started + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                errors = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"{self.name} exited: {errors}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw, \
                        context.wrap_socket(raw, server_hostname=SERVICE_HOST) as tls:
                    tls.sendall(f"GET /readyz HTTP/1.1\r\nHost: {SERVICE_HOST}\r\nConnection: close\r\n\r\n".encode())
                    if tls.recv(64).startswith(b"HTTP/1.1 200"):
                        return time.monotonic() - started
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"{self.name} not ready after 30 s")

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_ours(cert_dir: Path, workers: int, policy: Path | None) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--cert-dir", str(cert_dir), "--workers", str(workers), "--probe-port", "0"]
    if policy:
        command += ["--policy", str(policy)]
    return Server("ours", command, port, cert_dir)


def start_floor(cert_dir: Path, workers: int) -> Server:
    port = free_port()
    command = [sys.executable, str(HERE / "floor_app.py"), "--port", str(port), "--cert-dir", str(cert_dir),
               "--workers", str(workers)]
    return Server("floor", command, port, cert_dir)


@dataclass(frozen=True)
class Driver:
    """wrk with the issue's settings: 2 threads, 16 keep-alive connections, a warm-up first."""

    wrk: str
    warmup: float

    def run(self, server: Server, path: str, body: Path, seconds: float, connections: int = 16) -> dict[str, Any]:
        url = f"https://127.0.0.1:{server.port}{path}?timeout=10s"
        script = str(HERE / "report.lua")
        threads = min(2, connections)
        command = [self.wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
                   "-s", script, url]
        env = {**os.environ, "BENCH_BODY": str(body)}
        output = subprocess.run(command, capture_output=True, text=True, env=env, check=True,
                                timeout=seconds + 30).stdout
        line = next(line for line in output.splitlines() if line.startswith("BENCH "))
        return json.loads(line[len("BENCH "):])  # type: ignore[no-any-return]

    def measure(self, server: Server, path: str, body: Path, seconds: float, connections: int = 16) -> Sample:
        if self.warmup:
            self.run(server, path, body, self.warmup, connections)
        pids = server.pids()
        before = cpu_seconds(pids), children_cpu_seconds(), machine_ticks()
        result = self.run(server, path, body, seconds, connections)
        cpu, wrk_cpu = cpu_seconds(pids) - before[0], children_cpu_seconds() - before[1]
        ticks, steal = (now - then for now, then in zip(machine_ticks(), before[2], strict=True))
        requests = max(result["requests"], 1)
        return Sample(
            rps=requests / (result["duration_us"] / 1e6),
            p50_ms=result["p50_us"] / 1000,
            p90_ms=result["p90_us"] / 1000,
            p99_ms=result["p99_us"] / 1000,
            cpu_us=cpu / requests * 1e6,
            errors=result["errors"] + result["non2xx"],
            wrk_cpu_us=wrk_cpu / requests * 1e6,
            steal_pct=100 * steal / max(ticks, 1),
        )


@contextmanager
def servers(*started: Server) -> Iterator[tuple[Server, ...]]:
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def write(directory: Path, name: str, content: Any) -> Path:
    path = directory / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a few seconds, to prove the benchmark works")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--scaling-seconds", type=float, default=5)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--only", choices=["scopes"], help="run only this row")
    args = parser.parse_args()
    if args.tiny:
        args.repeats, args.seconds, args.warmup, args.scaling_seconds = 1, 1, 0, 1
    return args


def main() -> int:
    args = parse_args()
    driver = Driver(ensure_wrk(), args.warmup)
    work = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    cert_dir = work / "certs"
    ensure_certificates(cert_dir, "admission-webhook", "admission-webhook")
    cases = {
        "pod-allowed": ("/validate", write(work, "pod-allowed.json", bodies.pod_allowed())),
        "pod-denied": ("/validate", write(work, "pod-denied.json", bodies.pod_denied())),
        "deployment": ("/validate", write(work, "deployment.json", bodies.deployment(bodies.ALLOWED))),
        "pod-50": ("/validate", write(work, "pod-50.json", bodies.pod_with(50))),
        "project-mutate": ("/mutate", write(work, "project.json", bodies.project())),
    }
    if args.tiny:
        cases = {name: cases[name] for name in ("pod-allowed",)}
    rows: list[Row] = []
    if args.only == "scopes":
        scoped = measure_scopes(driver, cert_dir, work, args)
        print_scopes(scoped)
        shutil.rmtree(work, ignore_errors=True)
        return 1 if any(s.errors for row in scoped.rows for s in row.samples) else 0

    # 1. Our server and the floor, one worker each, runs interleaved.
    with servers(start_floor(cert_dir, 1), start_ours(cert_dir, 1, None)) as (floor, ours):
        floor_row = Row("pod-allowed", "floor", 1, ready_s=floor.ready_s)
        our_rows = {name: Row(name, "ours", 1, ready_s=ours.ready_s) for name in cases}
        lone = Row(LONE, "ours", 1, ready_s=ours.ready_s)
        for _ in range(args.repeats):
            floor_row.samples.append(driver.measure(floor, "/validate", cases["pod-allowed"][1], args.seconds))
            for name, (path, body) in cases.items():
                our_rows[name].samples.append(driver.measure(ours, path, body, args.seconds))
            lone.samples.append(driver.measure(ours, "/validate", cases["pod-allowed"][1], args.seconds, connections=1))
        floor_row.peak_rss_mb, floor_row.peak_rss_per_process_mb = peak_rss_mb(floor.pids())
        rss = peak_rss_mb(ours.pids())
        for row in (*our_rows.values(), lone):
            row.peak_rss_mb, row.peak_rss_per_process_mb = rss
        rows += [floor_row, *our_rows.values(), lone]

    # 2. Two workers, ours and the floor.
    if not args.tiny:
        with servers(start_floor(cert_dir, 2), start_ours(cert_dir, 2, None)) as (floor, ours):
            pair = [Row("pod-allowed", "floor", 2, ready_s=floor.ready_s),
                    Row("pod-allowed", "ours", 2, ready_s=ours.ready_s)]
            for _ in range(args.repeats):
                for row, server in zip(pair, (floor, ours), strict=True):
                    row.samples.append(driver.measure(server, "/validate", cases["pod-allowed"][1], args.seconds))
            for row, server in zip(pair, (floor, ours), strict=True):
                row.peak_rss_mb, row.peak_rss_per_process_mb = peak_rss_mb(server.pids())
            rows += pair

    # 3. How cost grows with patterns and containers.
    sizes = (10,) if args.tiny else (10, 100, 1000)
    pods = {n: write(work, f"pod-{n}.json", bodies.pod_with(n)) for n in ((100,) if args.tiny else (1, 10, 50, 100))}
    for patterns in sizes:
        policy = write(work, f"policy-{patterns}.yaml", bodies.policy_with(patterns))
        with servers(start_ours(cert_dir, 1, policy)) as (ours,):
            scaled = {n: Row(f"{patterns} patterns, {n} containers", "ours", 1) for n in pods}
            for _ in range(args.repeats):
                for n, body in pods.items():
                    scaled[n].samples.append(driver.measure(ours, "/validate", body, args.scaling_seconds))
            rows += scaled.values()

    # 4. The largest case again on two workers.
    if not args.tiny:
        rows.append(large_on_two_workers(driver, cert_dir, work / "policy-1000.yaml", pods[50], args))

    # 5. 1,000 scopes and 1,000 exceptions against none, on the same request.
    scoped = measure_scopes(driver, cert_dir, work, args)

    # 6. webhook check against the bare C loader, on the same files.
    check_row = measure_check(work / "corpus", *((200, 25) if args.tiny else (2000, 250)), args.repeats)

    print_report(rows, scoped, check_row)
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ | {"samples": [s.__dict__ for s in row.samples]}
                                         for row in (*rows, *scoped.rows)]
                                        + [scoped.in_process_us, check_row.__dict__], indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 1 if check_row.errors or any(s.errors for row in (*rows, *scoped.rows) for s in row.samples) else 0


@dataclass
class ScopesRun:
    """The scopes row: the same request under the scoped policy and under none, over TLS and in process."""

    rows: list[Row]  # [scoped, unscoped], their samples taken in alternation
    in_process_us: dict[str, list[float]] = field(default_factory=dict)  # by policy, per round

    def ratio(self, name: str = "cpu_us") -> float:
        scoped, unscoped = self.rows
        return scoped.median(name) / unscoped.median(name)

    def pair_ratios(self) -> list[float]:
        """Server CPU per request, scoped over unscoped, for each pair of runs taken one after the other."""
        scoped, unscoped = self.rows
        return [a.cpu_us / b.cpu_us for a, b in zip(scoped.samples, unscoped.samples, strict=True)]

    def in_process_ratio(self) -> float:
        return (statistics.median(self.in_process_us[SCOPED])
                / statistics.median(self.in_process_us[UNSCOPED]))


def measure_scopes(driver: Driver, cert_dir: Path, work: Path, args: argparse.Namespace) -> ScopesRun:
    """A Pod CREATE in the namespace of the last scope, which decides it and allows it, with 1,000
    scopes and 1,000 exceptions and with none: one server for each policy, runs alternating
    (ABBA, so a drifting machine favours neither), then the same in process."""
    body = write(work, "pod-last-scope.json", bodies.pod_in(bodies.scope_namespace(SCOPES)))
    texts = {SCOPED: bodies.scoped_policy(SCOPES, EXCEPTIONS), UNSCOPED: bodies.scoped_policy(0, 0)}
    paths = {name: write(work, f"policy-{i}.yaml", text) for i, (name, text) in enumerate(texts.items())}
    run = ScopesRun([])
    with servers(*(start_ours(cert_dir, 1, path) for path in paths.values())) as started:
        run.rows = [Row(name, "ours", 1, ready_s=server.ready_s) for name, server in zip(paths, started, strict=True)]
        pairs = list(zip(run.rows, started, strict=True))
        for repeat in range(args.repeats):
            for row, server in pairs if repeat % 2 == 0 else pairs[::-1]:
                row.samples.append(driver.measure(server, "/validate", body, args.seconds))
        for row, server in pairs:
            row.peak_rss_mb, row.peak_rss_per_process_mb = peak_rss_mb(server.pids())
    run.in_process_us = decide_in_process(texts, body.read_bytes(), rounds=3 if args.tiny else 9,
                                          calls=200 if args.tiny else 20000)
    return run


def decide_in_process(texts: dict[str, str], body: bytes, rounds: int, calls: int) -> dict[str, list[float]]:
    """Microseconds per review (decode, the validating decision, encode) under each policy, in turns."""
    policies = {name: parse_policy(text.encode(), name) for name, text in texts.items()}
    times: dict[str, list[float]] = {name: [] for name in policies}
    order = list(policies.items())
    for round_ in range(rounds):
        for name, policy in order if round_ % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            for _ in range(calls):
                request = decode_review(body)
                encode_response(request, VALIDATING.review(request, policy, NEVER), mutating=False)
            times[name].append((time.perf_counter() - started) / calls * 1e6)
    return times


@dataclass
class CheckRow:
    objects: int
    files: int
    parser: str  # the YAML parser check used: libyaml, or PyYAML's pure Python
    check_s: list[float] = field(default_factory=list)
    loader_s: list[float] = field(default_factory=list)
    errors: int = 0  # runs where check did not judge every object, or not allow them all

    def rate(self, seconds: list[float]) -> tuple[float, float, float]:
        """(median, min, max) objects per second."""
        rates = [self.objects / s for s in seconds]
        return statistics.median(rates), min(rates), max(rates)

    @property
    def ratio(self) -> float:
        return statistics.median(self.check_s) / statistics.median(self.loader_s)


def measure_check(directory: Path, objects: int, files: int, repeats: int) -> CheckRow:
    """``webhook check`` as the CLI runs it (read, judge, the table) against ``yaml.load_all`` with
    libyaml's CSafeLoader over the same files, each timed from reading the files to the end."""
    paths = corpus.write(directory, objects, files)
    policy = load_policy(None)
    row = CheckRow(objects, files, "libyaml" if kubeyaml.LOADER is not kubeyaml.PureLoader else "pure Python")
    for _ in range(max(repeats, 3)):  # at least three: they take seconds, not minutes
        out = io.StringIO()
        started = time.perf_counter()
        code = check.run(read([str(directory)], sys.stdin.buffer), policy, output="table", namespace="default",
                         out=out, err=io.StringIO())
        row.check_s.append(time.perf_counter() - started)
        row.errors += code != 0 or not out.getvalue().endswith(f"{objects} objects: {objects} allowed, 0 warned, "
                                                                 "0 denied\n")
        started = time.perf_counter()
        found = sum(1 for path in paths for document in yaml.load_all(path.read_bytes(), Loader=BARE_LOADER)
                    if document)
        row.loader_s.append(time.perf_counter() - started)
        row.errors += found != objects
    return row


def print_check(row: CheckRow) -> None:
    print("\n| case | objects / files | YAML parser | check objects/s median [min–max] "
          "| C loader alone objects/s median [min–max] | check time ÷ C loader time | errors |")
    print("|---|---|---|---|---|---|---|")
    check_rate, loader_rate = row.rate(row.check_s), row.rate(row.loader_s)
    print(f"| webhook check | {row.objects} / {row.files} | {row.parser} "
          f"| {check_rate[0]:.0f} [{check_rate[1]:.0f}–{check_rate[2]:.0f}] "
          f"| {loader_rate[0]:.0f} [{loader_rate[1]:.0f}–{loader_rate[2]:.0f}] | {row.ratio:.2f} | {row.errors} |")


def large_on_two_workers(driver: Driver, cert_dir: Path, policy: Path, body: Path, args: argparse.Namespace) -> Row:
    """At 16 connections one worker's latency is mostly queueing, which a second worker halves."""
    with servers(start_ours(cert_dir, 2, policy)) as (ours,):
        row = Row("1000 patterns, 50 containers", "ours", 2, ready_s=ours.ready_s)
        for _ in range(args.repeats):
            row.samples.append(driver.measure(ours, "/validate", body, args.seconds))
        row.peak_rss_mb, row.peak_rss_per_process_mb = peak_rss_mb(ours.pids())
    return row


def print_report(rows: list[Row], scoped: ScopesRun, check_row: CheckRow) -> None:
    print_table(rows)
    print_summary(rows)
    print()
    print_scopes(scoped)
    print_check(check_row)


def print_scopes(run: ScopesRun) -> None:
    """The scopes row and its verdict against the bound."""
    print(f"| Pod CREATE in {bodies.scope_namespace(SCOPES)}, under | workers | req/s median [min–max] "
          "| CPU µs/req, server median [min–max] | CPU × no scopes | wrk CPU µs/req | p50 ms | p99 ms "
          "| ready s | steal % | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    unscoped_cpu = run.rows[1].median("cpu_us")
    for row in run.rows:
        rps, cpu = row.spread("rps"), row.spread("cpu_us")
        print(f"| {row.case} | {row.workers} | {row.median('rps'):.0f} [{rps[0]:.0f}–{rps[1]:.0f}] "
              f"| {row.median('cpu_us'):.0f} [{cpu[0]:.0f}–{cpu[1]:.0f}] | {row.median('cpu_us') / unscoped_cpu:.2f} "
              f"| {row.median('wrk_cpu_us'):.0f} | {row.median('p50_ms'):.2f} | {row.median('p99_ms'):.2f} "
              f"| {row.ready_s:.2f} | {row.median('steal_pct'):.1f} | {sum(s.errors for s in row.samples)} |")
    ratio, pairs = run.ratio(), run.pair_ratios()
    verdict = "within" if ratio <= SCOPES_BOUND else "OVER"
    print(f"\nScopes: with {SCOPED} the request cost {ratio:.2f}× its cost with {UNSCOPED} (server CPU per "
          f"request, medians of {len(pairs)} alternating runs; each pair {min(pairs):.2f}–{max(pairs):.2f}×): "
          f"{verdict} the {SCOPES_BOUND:.1f}× bound.")
    scoped_us, unscoped_us = (statistics.median(run.in_process_us[name]) for name in (SCOPED, UNSCOPED))
    print(f"In process (decode, decision, encode; no TLS or HTTP): {scoped_us:.1f} µs against {unscoped_us:.1f} µs, "
          f"{run.in_process_ratio():.2f}×.")


def print_table(rows: list[Row]) -> None:
    floors = {row.workers: row.median("rps") for row in rows if row.server == "floor"}
    one_worker = next((row.median("rps") for row in rows if row.server == "ours" and row.workers == 1
                       and row.case == "pod-allowed"), None)
    print("| case | server | workers | req/s median [min–max] | × floor | p50 ms | p90 ms | p99 ms "
          "| CPU µs/req (server / wrk) | peak RSS MB (tree / max process) | ready s | steal % | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        low, high = row.spread("rps")
        floor = floors.get(row.workers)
        ratio = f"{row.median('rps') / floor:.2f}" if floor and row.case == "pod-allowed" else ""
        if row.server == "ours" and row.workers == 2 and one_worker and row.case == "pod-allowed":
            ratio += f" ({row.median('rps') / one_worker:.2f}× 1 worker)"
        rss = f"{row.peak_rss_mb:.0f} / {row.peak_rss_per_process_mb:.0f}" if row.peak_rss_mb else ""
        ready = f"{row.ready_s:.2f}" if row.ready_s else ""
        print(f"| {row.case} | {row.server} | {row.workers} | {row.median('rps'):.0f} [{low:.0f}–{high:.0f}] | {ratio} "
              f"| {row.median('p50_ms'):.2f} | {row.median('p90_ms'):.2f} | {row.median('p99_ms'):.2f} "
              f"| {row.median('cpu_us'):.0f} / {row.median('wrk_cpu_us'):.0f} | {rss} | {ready} "
              f"| {row.median('steal_pct'):.1f} | {sum(s.errors for s in row.samples)} |")


def print_summary(rows: list[Row]) -> None:
    """What the machine allowed: how much the host took, the tail a lone request has, and the
    cores the server had with one worker and with two, beside wrk."""
    def find(case: str, workers: int) -> Row | None:
        return next((row for row in rows if row.server == "ours" and row.case == case and row.workers == workers), None)

    lone, one, two = find(LONE, 1), find("pod-allowed", 1), find("pod-allowed", 2)
    steal = [s.steal_pct for row in rows for s in row.samples]
    print(f"\nSteal: the host took {statistics.median(steal):.1f}% of this machine's CPU time in the median run "
          f"(most {max(steal):.1f}%).")
    if lone is not None:
        print(f"Lone requests (1 connection, nothing queued): p50 {lone.median('p50_ms'):.2f} ms, "
              f"p99 {lone.median('p99_ms'):.2f} ms. That gap is not queueing but the machine's own tail, and at "
              "16 connections one stall delays every request in the queue.")
    if one is not None and two is not None:
        def cores(row: Row, per_request: str) -> float:
            return statistics.median(s.rps * getattr(s, per_request) / 1e6 for s in row.samples)

        print(f"Two workers: {two.median('rps') / one.median('rps'):.2f}× one worker. The server had "
              f"{cores(one, 'cpu_us'):.2f} cores with one worker and {cores(two, 'cpu_us'):.2f} with two, while wrk "
              f"used {cores(two, 'wrk_cpu_us'):.2f} of the same 2 cores beside it: at the same cost per request, "
              "two workers can scale only as far as the cores they get.")


if __name__ == "__main__":
    raise SystemExit(main())
