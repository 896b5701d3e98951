"""The benchmark runs (tiny mode, a few seconds). Its figures are not asserted: timings
belong in the benchmark, not in tests; this only proves the benchmark still works."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_benchmark_runs_in_tiny_mode() -> None:
    result = subprocess.run([sys.executable, "bench/run.py", "--tiny"], cwd=REPO, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
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
    summary = result.stdout.split("\n\n", 1)[1]
    assert summary.startswith("Steal: the host took ")
    assert "Lone requests (1 connection, nothing queued): p50 " in summary
