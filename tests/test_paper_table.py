"""sweeps/bench/paper_table.py on a real sweep's results.csv (the committed rel-f1 check)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "sweeps" / "bench" / "paper_table.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_cells_and_differences_against_table3():
    out = run(str(REPO / "sweeps" / "bench" / "results" / "rel-f1-check.csv"))
    assert out.returncode == 0, out.stderr
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): [c.strip() for c in line.split("|")[4:8]]
            for line in out.stdout.splitlines() if line.startswith("| driver-")}
    # the check run's ResNet-SAGE B on driver-dnf: AUROC 0.7529 / 0.7418 (n=1); paper test 77.78
    assert rows[("driver-dnf (AUROC)", "ResNet-SAGE", "B")] == [
        "71.64 / 77.78", "75.29 ± 0.00 / 74.18 ± 0.00", "1", "-3.60"]
    # MAE cells keep three decimals and are not scaled
    assert rows[("driver-position (MAE)", "ResNet-SAGE", "P&F")][1] == "3.246 ± 0.000 / 4.421 ± 0.000"
    # cells the run did not have are marked missing, not invented
    assert rows[("driver-top3 (AUROC)", "Linear-SAGE", "P")][1:] == ["—", "0", "—"]
    # P&F - B, positive = P&F better: dnf ResNet test 72.09 - 74.18 (paper -0.97), val 76.51 - 71.64 in the paper
    row = next(line for line in out.stdout.splitlines() if line.startswith("| driver-dnf | ResNet-SAGE |"))
    assert row.endswith("| -2.096 | -0.970 |") and "| +4.870 |" in row
    assert "| driver-dnf | Linear-SAGE | — | +0.630 | — | -2.140 |" in out.stdout  # B only: no difference
    # 3 cells have both regimes; on test dnf and top3 ResNet agree (both negative), position does not
    assert "test 2 of 3" in out.stdout


def test_bad_input(tmp_path):
    missing = run(str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("task,mean\nx,1\n")
    out = run(str(bad))
    assert out.returncode == 2 and "lacks columns" in out.stderr
