"""sweeps/paper.py on a real sweep's results.csv (the committed rel-f1 check)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "sweeps" / "paper.py"


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


def test_pf_minus_b_carries_a_welch_interval(tmp_path):
    """Cells of 5 trials each: P&F − B gets ± the 95 % Welch half-width; a cell of one trial none."""
    rows = []
    for regime, mean in (("B", 0.70), ("PF", 0.72)):
        for split in ("val", "test"):
            rows.append(("rel-f1", "driver-dnf", "linear", regime, split, "roc_auc", mean, 0.01, 5))
            rows.append(("rel-f1", "driver-dnf", "resnet", regime, split, "roc_auc", mean, 0.01,
                         1 if regime == "PF" else 5))
    csv = tmp_path / "results.csv"
    pd.DataFrame(rows, columns=["dataset", "task", "backbone", "regime", "split", "metric", "mean", "std", "n"]
                 ).to_csv(csv, index=False)
    out = run(str(csv))
    assert out.returncode == 0, out.stderr
    # s^2 = 1.0^2 * 5/4 per cell (points), se = sqrt(2 * 1.25 / 5), df = 8: t = 2.306 -> 1.631
    assert "| driver-dnf | Linear-SAGE | +2.000 ± 1.631 | +0.630 | +2.000 ± 1.631 | -2.140 |" in out.stdout
    assert "| driver-dnf | ResNet-SAGE | +2.000 | +4.870 | +2.000 | -0.970 |" in out.stdout
    assert "Intervals that exclude 0: val 1 of 1, test 1 of 1." in out.stdout
