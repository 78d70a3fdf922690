"""Rewrite the generated part of a results page from a running (or finished) sweep.

    .venv/bin/python sweeps/progress_page.py --name rel-f1-paper \\
        --mlflow-uri sqlite:////work/grid/mlruns.db \\
        --page sweeps/bench/results/rel-f1.md --csv sweeps/bench/results/rel-f1-partial.csv

A paper grid runs for days across sessions, and its page is updated many times; this
makes each update one command instead of hand-copied tables. Between the page's markers
``<!-- progress:begin -->`` and ``<!-- progress:end -->`` it writes: fine-tuning trials
finished, their busy time, ``sweeps/status.py``'s estimate of the time left, the top-5
table over the finished trials (next to the paper's Table 3 when the tasks are rel-f1's)
and the per-trial list. Everything outside the markers (protocol, events, the reading) is
the author's and is kept as it is. ``--csv`` also writes the partial ``results.csv``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import pandas as pd

from relcore.errors import RelcoreError
from sweeps import aggregate, pages, report, status
from sweeps import paper as paper_table

BLOCK = "progress"


def _busy_summary(trials: pd.DataFrame) -> str:
    done = trials[(trials["stage"] == "finetune") & (trials["status"] == "FINISHED")]
    if done.empty:
        return "none has finished yet."
    deep = done[done["key"].str.contains(r"-L[3-9]-", regex=True)]
    text = (f"busy time {done['busy_s'].min():,.0f}–{done['busy_s'].max():,.0f} s per trial at its "
            f"CPUs, mean {done['busy_s'].mean():,.0f} s")
    if not deep.empty:
        text += (f"; {len(deep)} of them have 3 or more GNN layers "
                 f"({deep['busy_s'].min():,.0f}–{deep['busy_s'].max():,.0f} s each)")
    return text + "."


def _counts(stages: pd.DataFrame, stage: str) -> str:
    row = stages[stages["stage"] == stage].iloc[0]
    planned = "?" if pd.isna(row["planned"]) else int(row["planned"])
    return (f"{int(row['finished'])} of {planned} trials finished ({int(row['running'])} running, "
            f"{int(row['failed'])} failed)")


def progress_block(runs: status.SweepRuns, now: dt.datetime) -> tuple[str, pd.DataFrame]:
    """The generated markdown and the top-5 table over the finished fine-tuning trials."""
    stages = status.stage_table(runs)
    slots = status.trial_slots(runs, stages)
    left, unknown = status.time_left(runs, stages, runs.pretrain_params())
    trials = status.trial_list(runs)
    results = aggregate.top_k(status.finished_finetune_trials(runs))

    lines = [f"Pretraining: {_counts(stages, 'pretrain')}. Fine-tuning: **{_counts(stages, 'finetune')}** "
             f"at {now:%Y-%m-%d %H:%M} UTC; " + _busy_summary(trials)]
    if left or unknown:
        lines.append(f"`sweeps/status.py` prices each unfinished trial by the mean busy time of the "
                     f"finished ones of its backbone and depth: **~{left / slots / 3600:.1f} h left** "
                     f"at {slots} trial(s) at once" + (f", plus {', '.join(unknown)}" if unknown else "") + ".")
    lines.append("")
    if results.empty:
        lines.append("No fine-tuning trial has finished yet.")
    elif set(results["task"]) <= set(paper_table.METRIC):
        lines += ["Top-5 over the finished trials (`n` = trials in the cell so far; std 0 where n = 1), "
                  "next to the paper's Table 3:", "", paper_table.table(results), "",
                  paper_table.pf_vs_b(results)]
    else:
        lines += ["Top-5 over the finished trials (`n` = trials in the cell so far):", "",
                  report.results_markdown(results)]
    listing = trials[trials["stage"] == "finetune"].drop(columns="stage")
    lines += ["", "Every fine-tuning trial (`best_val` is the task's metric; a RUNNING row is in flight "
              "or was cut by the last stop):", "", "```",
              listing.to_string(index=False, float_format=lambda v: f"{v:.4f}"), "```"]
    return "\n".join(lines), results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="the sweep's --name (its MLflow experiment)")
    p.add_argument("--mlflow-uri", default="sqlite:///mlruns.db")
    p.add_argument("--page", required=True, help="markdown page with the progress markers")
    p.add_argument("--csv", help="also write the partial top-5 results.csv here")
    args = p.parse_args(argv)
    try:
        page_path = Path(args.page)
        try:
            page = page_path.read_text()
        except OSError as e:
            raise RelcoreError(f"cannot read {args.page}: {e.strerror}") from e
        pages.replace_block(page, "", BLOCK)  # check the markers before reading the store
        runs = status.open_sweep(args.name, args.mlflow_uri)
        block, results = progress_block(runs, dt.datetime.now(dt.timezone.utc))
        writes = [(page_path, lambda f: f.write_text(pages.replace_block(page, block, BLOCK)))]
        if args.csv and not results.empty:
            writes.append((Path(args.csv), lambda f: results.to_csv(f, index=False)))
        pages.write_all(writes)
    except RelcoreError as e:  # also status.SweepNotFound or a bad store
        print(f"progress_page: {e}", file=sys.stderr)
        return 2
    print(f"progress_page: rewrote the progress block of {args.page}" + (f" and {args.csv}" if args.csv else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
