"""A sweep's rel-f1 ``results.csv`` next to the paper's Table 3 (top-5 mean, val / test).

    .venv/bin/python sweeps/paper.py runs/rel-f1-paper/results.csv

prints one markdown row per (task, backbone, regime): the paper's val / test, ours
(mean ± std over n trials), and test(ours) − test(paper); then, per task and backbone,
whether P&F beats B and by how much (AUROC: higher is better; MAE: lower), with a 95 %
Welch interval where both cells hold 2 or more trials.
Works on a partial ``results.csv`` from ``sweeps/status.py --out`` too: ``n`` says how
many finished trials each cell is over.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from sweeps import aggregate
from sweeps.report import BACKBONE_LABEL, REGIME_LABEL, metric_units

# Peleška & Šír (2025), Table 3, rel-f1: (val, test); AUROC in %, MAE in positions.
PAPER: dict[tuple[str, str, str], tuple[float, float]] = {
    ("driver-dnf", "linear", "B"): (72.42, 76.53), ("driver-dnf", "linear", "P"): (73.85, 75.58),
    ("driver-dnf", "linear", "PF"): (73.05, 74.39),
    ("driver-dnf", "resnet", "B"): (71.64, 77.78), ("driver-dnf", "resnet", "P"): (74.13, 75.55),
    ("driver-dnf", "resnet", "PF"): (76.51, 76.81),
    ("driver-top3", "linear", "B"): (76.51, 84.12), ("driver-top3", "linear", "P"): (79.01, 82.44),
    ("driver-top3", "linear", "PF"): (77.52, 80.92),
    ("driver-top3", "resnet", "B"): (75.57, 85.21), ("driver-top3", "resnet", "P"): (79.25, 82.09),
    ("driver-top3", "resnet", "PF"): (80.95, 79.93),
    ("driver-position", "linear", "B"): (3.317, 3.587), ("driver-position", "linear", "P"): (3.274, 3.596),
    ("driver-position", "linear", "PF"): (3.175, 3.554),
    ("driver-position", "resnet", "B"): (3.549, 3.871), ("driver-position", "resnet", "P"): (3.229, 3.638),
    ("driver-position", "resnet", "PF"): (3.101, 3.469),
}
METRIC = {"driver-dnf": "roc_auc", "driver-top3": "roc_auc", "driver-position": "mae"}
# RelBench's GNN baseline (Robinson et al., 2024), test, on relbench's cut at the test timestamp.
RELBENCH_GNN = {"driver-dnf": 72.62, "driver-top3": 75.54, "driver-position": 4.022}


def ours(results: pd.DataFrame, task: str, backbone: str, regime: str, split: str) -> tuple[float, float, int] | None:
    """(mean, std, n) in the paper's units (AUROC x 100), or None when the cell is missing."""
    found = aggregate.cell(results, task, backbone, regime, split, METRIC[task])
    if found is None:
        return None
    _, scale, _ = metric_units(METRIC[task])
    return found[0] * scale, found[1] * scale, found[2]


def _fmt(x: float, task: str) -> str:
    _, _, digits = metric_units(METRIC[task])
    return f"{x:.{digits}f}"


def table(results: pd.DataFrame) -> str:
    lines = ["| task (metric) | backbone | regime | paper val / test | ours val / test | n | test: ours − paper |",
             "|---|---|---|---|---|---|---|"]
    for (task, backbone, regime), (p_val, p_test) in PAPER.items():
        val, test = ours(results, task, backbone, regime, "val"), ours(results, task, backbone, regime, "test")
        unit, _, digits = metric_units(METRIC[task])
        if val is None or test is None:
            cells = ["—", "0", "—"]
        else:
            cells = [f"{_fmt(val[0], task)} ± {_fmt(val[1], task)} / {_fmt(test[0], task)} ± {_fmt(test[1], task)}",
                     str(test[2]), f"{test[0] - p_test:+.{digits}f}"]
        lines.append(f"| {task} ({unit}) | {BACKBONE_LABEL[backbone]} | {REGIME_LABEL[regime]} | "
                     f"{_fmt(p_val, task)} / {_fmt(p_test, task)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pf_vs_b(results: pd.DataFrame) -> str:
    """Where P&F beats B (ours and the paper's), by how much, on validation and test; then
    how many cells agree with the paper in sign."""
    lines = ["| task | backbone | ours: P&F − B val | paper: val | ours: P&F − B test | paper: test |",
             "|---|---|---|---|---|---|"]
    agree = {"val": [0, 0], "test": [0, 0]}  # same sign as the paper, cells with both regimes
    clear = {"val": [0, 0], "test": [0, 0]}  # intervals that exclude 0, cells with an interval
    for task in METRIC:
        sign = -1.0 if METRIC[task] == "mae" else 1.0  # positive = P&F better
        for backbone in BACKBONE_LABEL:
            cells = []
            for i, split in enumerate(("val", "test")):
                gain = aggregate.gain_over_b(results, task, backbone, "PF", split, METRIC[task], sign > 0)
                paper = sign * (PAPER[(task, backbone, "PF")][i] - PAPER[(task, backbone, "B")][i])
                if gain is None:
                    cells += ["—", f"{paper:+.3f}"]
                    continue
                _, scale, _ = metric_units(METRIC[task])  # AUROC in points, as the paper prints it
                mine, half = gain[0] * scale, None if gain[1] is None else gain[1] * scale
                agree[split][0] += (mine > 0) == (paper > 0)
                agree[split][1] += 1
                if half is None:
                    cells += [f"{mine:+.3f}", f"{paper:+.3f}"]
                    continue
                clear[split][0] += abs(mine) > half
                clear[split][1] += 1
                cells += [f"{mine:+.3f} ± {half:.3f}", f"{paper:+.3f}"]
            lines.append(f"| {task} | {BACKBONE_LABEL[backbone]} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("(positive = P&F better than B: higher AUROC, lower MAE; AUROC in points) "
                 f"Same sign as the paper: val {agree['val'][0]} of {agree['val'][1]} cells, "
                 f"test {agree['test'][0]} of {agree['test'][1]}.")
    if clear["val"][1] or clear["test"][1]:
        lines.append("")
        lines.append("± is the half-width of a 95 % Welch t interval over the two cells' trials (top-5 "
                     "chosen by validation, so on val it is optimistic). Intervals that exclude 0: "
                     f"val {clear['val'][0]} of {clear['val'][1]}, test {clear['test'][0]} of {clear['test'][1]}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results_csv")
    args = p.parse_args(argv)
    try:
        results = pd.read_csv(args.results_csv)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        print(f"paper: cannot read {args.results_csv}: {e}", file=sys.stderr)
        return 2
    missing = {"task", "backbone", "regime", "split", "metric", "mean", "std", "n"} - set(results.columns)
    if missing:
        print(f"paper: {args.results_csv} lacks columns {sorted(missing)}", file=sys.stderr)
        return 2
    print(table(results))
    print()
    print(pf_vs_b(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
