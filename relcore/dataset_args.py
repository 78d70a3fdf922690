"""The dataset arguments every ``relcore`` command takes, and the spec they describe."""

from __future__ import annotations

import argparse


def add_dataset_args(p: argparse.ArgumentParser, db_cut: bool = True) -> None:
    p.add_argument("dataset", help="rel-f1 | synthetic[:N] | sqlite:PATH")
    if db_cut:
        p.add_argument("--db-cut", default="test", choices=["test", "full"],
                       help="database the graph is built from: test = relbench's cut at the test timestamp, "
                       "full = the whole database (the paper's code); pretraining and fine-tuning of one "
                       "checkpoint must use the same")
    p.add_argument("--raw-dir", help="folder of raw Ergast CSVs for rel-f1 (env RELCORE_F1_RAW_DIR)")
    p.add_argument("--time-col", action="append", default=[], metavar="TABLE.COL",
                   help="time column of a SQLite table (repeatable)")
    p.add_argument("--json", action="store_true", help="last line of output is one JSON object")


def spec_from_args(args: argparse.Namespace):
    from relcore.data import DatasetSpec

    return DatasetSpec(args.dataset, raw_dir=args.raw_dir, time_cols=tuple(args.time_col),
                       db_cut=getattr(args, "db_cut", "test"))  # describe has no --db-cut
