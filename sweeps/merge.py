"""Merge several sweeps' ``trials.csv`` into one table: a grid run in parts is one result.

    .venv/bin/python sweeps/merge.py sweeps/bench/results/parity/*.csv \\
        --csv sweeps/bench/results/rel-f1-parity.csv --page sweeps/bench/results/rel-f1-parity.md

Parts run on different days, machines or clusters meet here, not in a sweep's store: the
top 5 per (task, backbone, regime) is chosen over the union of their trials by validation
only, and the differences between regimes are taken over all trials of a cell. A cell that
would mix protocols, database cuts or batch orders, or a trial present in two parts, is refused.
``--csv`` gets ``results.csv``'s columns; ``--md`` a generated page; ``--page`` an
existing page whose ``<!-- merge:begin -->`` / ``<!-- merge:end -->`` block is rewritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from relcore.errors import RelcoreError
from sweeps import aggregate, pages, paper, report, trials

BLOCK = "merge"


def merge(paths: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The union of the parts' trials (checked) and its top-5 ``results.csv`` table."""
    if not paths:
        raise RelcoreError("no trials.csv given")
    table = pd.concat([trials.read(p).assign(part=Path(p).stem) for p in paths], ignore_index=True)
    trials.check_cells(table)
    return table, aggregate.top_k(table.drop(columns="part"))


def against_markdown(results: pd.DataFrame, others: dict[str, pd.DataFrame]) -> str:
    """The merged top-5 cells next to other ``results.csv`` tables (e.g. the same grid on
    another database cut), val / test of each task's selection metric."""
    names = list(others)
    lines = ["| task | backbone | regime | merged val / test | " + " | ".join(f"{n} val / test" for n in names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for task in sorted(results.task.unique()):
        metric = report.selection_metric(results, task)
        _, scale, digits = report.metric_units(metric)
        for backbone in sorted(results.loc[results.task == task, "backbone"].unique()):
            for regime in report.REGIME_ORDER:
                cells = []
                for table in (results, *others.values()):
                    val, test = (aggregate.cell(table, task, backbone, regime, split, metric) for split in ("val", "test"))
                    cells.append("–" if val is None or test is None else
                                 f"{val[0] * scale:.{digits}f} / {test[0] * scale:.{digits}f} (n={val[2]})")
                if cells[0] == "–" and all(c == "–" for c in cells):
                    continue
                lines.append(f"| {task} | {report.BACKBONE_LABEL.get(backbone, backbone)} | "
                             f"{report.REGIME_LABEL[regime]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown(table: pd.DataFrame, results: pd.DataFrame, others: dict[str, pd.DataFrame] | None = None) -> str:
    parts = table.groupby("part", sort=True).size()
    lines = [f"Merged by `sweeps/merge.py` from {len(parts)} part(s), {len(table)} fine-tuning trials: "
             + ", ".join(f"`{name}` ({n})" for name, n in parts.items()) + ".", "",
             report.results_markdown(results, table.drop(columns="part"))]
    if set(results["task"]) <= set(paper.METRIC):
        gnn = ", ".join(f"{t} {v}" for t, v in paper.RELBENCH_GNN.items())
        lines += ["Next to the paper's Table 3 (its values val / test; ours top-5 mean ± std):", "",
                  paper.table(results), "", paper.pf_vs_b(results), "",
                  f"RelBench's GNN baseline, test (relbench's cut at the test timestamp): {gnn}."]
    if others:
        lines += ["", "The merged cells next to " + ", ".join(f"`{n}`" for n in others) + " (top-5 means):", "",
                  against_markdown(results, others)]
    return "\n".join(lines) + "\n"


def _against(text: str) -> tuple[str, pd.DataFrame]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise RelcoreError(f"--against wants NAME=results.csv, got '{text}'")
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise RelcoreError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    missing = {"task", "backbone", "regime", "split", "metric", "mean", "n"} - set(table.columns)
    if missing:
        raise RelcoreError(f"{path} is not a results.csv: no column(s) {', '.join(sorted(missing))}")
    return name, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trials", nargs="+", help="trials.csv files of the parts (a sweep's runs/<name>/trials.csv)")
    p.add_argument("--csv", help="write the merged top-5 table (results.csv's columns) here")
    p.add_argument("--md", help="write the merged tables as a markdown file here")
    p.add_argument("--page", help=f"rewrite the <!-- {BLOCK}:begin/end --> block of this page")
    p.add_argument("--against", action="append", default=[], metavar="NAME=results.csv",
                   help="also set the merged cells next to another results.csv (repeatable)")
    args = p.parse_args(argv)
    try:
        others = dict(_against(a) for a in args.against)
        table, results = merge(args.trials)
        text = markdown(table, results, others)
        writes = []
        if args.csv:
            writes.append((Path(args.csv), lambda f: results.to_csv(f, index=False)))
        if args.md:
            writes.append((Path(args.md), lambda f: f.write_text(text)))
        if args.page:
            try:
                page = Path(args.page).read_text()
            except OSError as e:
                raise RelcoreError(f"cannot read {args.page}: {e.strerror}") from None
            block = pages.replace_block(page, text.rstrip("\n"), BLOCK)
            writes.append((Path(args.page), lambda f: f.write_text(block)))
        pages.write_all(writes)
    except RelcoreError as e:
        print(f"merge: error: {e}", file=sys.stderr)
        return 2
    if not writes:
        print(text)
    print(f"merge: {len(table)} trials from {len(args.trials)} file(s) -> {len(results)} result rows"
          + "".join(f"; wrote {t}" for t, _ in writes), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
