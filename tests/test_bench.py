"""The benchmark runs (tiny mode, a few seconds). Its figures are not asserted: timings
belong in the benchmark, not in tests; this only proves the benchmark still works."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from bench import bodies
from bench.run import LONE, SCOPED, UNSCOPED, Row, Sample, ScopesRun, print_scopes, print_summary
from tests.conftest import REPO
from tests.docs import NUMBERS, doc_block, match
from webhook.admission.deadline import NEVER
from webhook.admission.review import Response, decode_review
from webhook.admission.validate import validate
from webhook.policy.model import parse_policy
from webhook.policy.scopes import no_namespace_labels


def test_benchmark_runs_in_tiny_mode() -> None:
    result = subprocess.run([sys.executable, "bench/run.py", "--tiny"], cwd=REPO, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    table, summary, scopes_table, scopes_verdict, check_table = result.stdout.split("\n\n")
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| case | server | workers | req/s")
    cases = {tuple(cell.strip() for cell in row.split("|")[1:3]) for row in rows[1:]}
    assert cases == {("pod-allowed", "floor"), ("pod-allowed", "ours"), ("pod-allowed, 1 connection", "ours"),
                     ("10 patterns, 100 containers", "ours")}
    for row in rows[1:]:
        cells = [cell.strip() for cell in row.split("|")]
        assert float(cells[4].split()[0]) > 0  # requests per second
        server_cpu, wrk_cpu = (float(value) for value in cells[9].split(" / "))
        assert server_cpu > 0 and wrk_cpu > 0  # both sides of the same cores are counted
        assert 0 <= float(cells[-3]) <= 100  # steal %
        assert cells[-2] == "0"  # errors
    assert summary.startswith("Steal: the host took ")
    assert "Lone requests (1 connection, nothing queued): p50 " in summary
    assert_the_scopes_row(scopes_table, scopes_verdict)
    header, _, check_row = check_table.strip().splitlines()
    assert header.startswith("| case | objects / files | YAML parser | check objects/s median [min–max] "
                             "| C loader alone objects/s median [min–max] | check time ÷ C loader time |")
    cells = [cell.strip() for cell in check_row.split("|")[1:-1]]
    assert cells[:3] == ["webhook check", "200 / 25", "libyaml"]
    assert float(cells[3].split()[0]) > 0 and float(cells[4].split()[0]) > 0 and float(cells[5]) > 0
    assert cells[6] == "0"  # every object read and allowed, by check and by the bare loader


def test_the_summary_gives_the_cores_each_side_had(capsys: pytest.CaptureFixture[str]) -> None:
    def row(case: str, workers: int, sample: Sample) -> Row:
        return Row(case, "ours", workers, [sample])

    def sample(rps: float, cpu_us: float, wrk_cpu_us: float, steal_pct: float) -> Sample:
        return Sample(rps, 1.0, 2.0, 4.0, cpu_us, 0, wrk_cpu_us=wrk_cpu_us, steal_pct=steal_pct)

    print_summary([row("pod-allowed", 1, sample(8000, 120, 40, 1.0)),
                   row("pod-allowed", 2, sample(12000, 125, 40, 3.0)),
                   row(LONE, 1, sample(4000, 170, 60, 9.0))])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "Steal: the host took 3.0% of this machine's CPU time in the median run (most 9.0%)."
    assert lines[1].startswith("Lone requests (1 connection, nothing queued): p50 1.00 ms, p99 4.00 ms.")
    # 8000/s × 120 µs = 0.96 cores; 12000/s × 125 µs = 1.50; wrk 12000/s × 40 µs = 0.48
    assert lines[2].startswith("Two workers: 1.50× one worker. The server had 0.96 cores with one worker and "
                               "1.50 with two, while wrk used 0.48 of the same 2 cores beside it")


def test_the_performance_page_shows_the_summary_as_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """The figures are a run's own; the wording is what bench/run.py prints today."""
    def row(case: str, workers: int) -> Row:
        return Row(case, "ours", workers, [Sample(9000, 1.0, 2.0, 4.0, 120, 0, wrk_cpu_us=40, steal_pct=2.0)])

    print_summary([row("pod-allowed", 1), row("pod-allowed", 2), row(LONE, 1)])
    block = doc_block("docs/performance.md", "bench-summary")
    match(block.body, capsys.readouterr().out.strip(), (NUMBERS,), what=block.where)


def assert_the_scopes_row(table: str, verdict: str) -> None:
    """Both policies judged, over TLS and in process, with the ratio and a verdict; no figure is judged."""
    header, _, *rows = table.strip().splitlines()
    assert header.startswith("| Pod CREATE in team-0999, under | workers | req/s median [min–max] "
                             "| CPU µs/req, server median [min–max] | CPU × no scopes |")
    cells = [[cell.strip() for cell in row.split("|")[1:-1]] for row in rows]
    assert [row[0] for row in cells] == [SCOPED, UNSCOPED] == ["1,000 scopes, 1,000 exceptions", "no scopes"]
    for row in cells:
        assert float(row[2].split()[0]) > 0  # requests per second
        assert float(row[3].split()[0]) > 0 and float(row[5]) > 0  # server and wrk CPU per request
        assert float(row[4]) > 0  # the ratio column
        assert row[-1] == "0"  # errors
    assert cells[1][4] == "1.00"
    over_tls, in_process = verdict.strip().splitlines()
    assert over_tls.startswith(f"Scopes: with {SCOPED} the request cost ")
    assert over_tls.endswith(("within the 1.1× bound.", "OVER the 1.1× bound."))
    assert f" {cells[0][4]}× its cost with no scopes " in over_tls  # the table's ratio, and the verdict's
    assert in_process.startswith("In process (decode, decision, encode; no TLS or HTTP): ")


def test_the_scopes_rows_request_is_decided_by_the_last_scope_and_allowed() -> None:
    """The generated policy is the mix it claims, and its Pod is the case the bound is about."""
    scoped = parse_policy(bodies.scoped_policy(1000, 1000).encode(), "scoped.yaml")
    unscoped = parse_policy(bodies.scoped_policy(0, 0).encode(), "unscoped.yaml")
    assert (len(scoped.scopes.scopes), len(scoped.exceptions.items)) == (1000, 1000)
    assert not unscoped.scoped and not unscoped.excepting
    assert not scoped.needs_namespace_labels  # serve refuses a namespaceSelector for now
    matches = [scope.match for scope in scoped.scopes.scopes]
    assert sum(m.exact_namespaces is not None and not m.namespace_globs for m in matches) > 500
    assert sum(bool(m.namespace_globs) for m in matches) > 50
    assert sum(m.object_selector is not None for m in matches) > 50
    assert sum(m.kinds is not None for m in matches) > 50
    assert sum(m.exact_namespaces is None for m in matches) >= 5  # tried whatever the namespace
    body = orjson.dumps(bodies.pod_in(bodies.scope_namespace(1000)))
    request = decode_review(body)
    assert request.namespace == "team-0999"
    in_order = [s.rules.scope for s in scoped.scopes.scopes if s.match.selects(request, no_namespace_labels)]
    assert in_order == ["team-0999"]
    for p, scope in ((scoped, "team-0999"), (unscoped, None)):
        assert validate(request, p, NEVER) == Response(True, scope=scope)


def test_the_performance_page_shows_the_scopes_verdict_as_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """The figures are a run's own; the wording is what bench/run.py prints today."""
    def row(case: str, cpu_us: float) -> Row:
        return Row(case, "ours", 1, [Sample(6000, 2.0, 3.0, 9.0, cpu_us, 0, wrk_cpu_us=40, steal_pct=0.2)])

    block = doc_block("docs/performance.md", "bench-scopes")
    within = "within the 1.1× bound" in block.body[0]  # the page shows a run that held, or one that did not
    run = ScopesRun([row(SCOPED, 116 if within else 149), row(UNSCOPED, 113 if within else 123)],
                    {SCOPED: [21.5], UNSCOPED: [19.8]})
    print_scopes(run)
    verdict = capsys.readouterr().out.strip().splitlines()[-2:]
    match(block.body, "\n".join(verdict), (NUMBERS,), what=block.where)
