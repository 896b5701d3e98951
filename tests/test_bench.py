"""The benchmark runs (tiny mode, a few seconds). Its figures are not asserted: timings
belong in the benchmark, not in tests; this only proves the benchmark still works."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.run import LONE, Row, Sample, print_summary
from tests.conftest import REPO
from tests.docs import NUMBERS, doc_block, match


def test_benchmark_runs_in_tiny_mode() -> None:
    result = subprocess.run([sys.executable, "bench/run.py", "--tiny"], cwd=REPO, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    table, summary, check_table = result.stdout.split("\n\n")
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
