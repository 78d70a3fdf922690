"""``relcore`` command line: ``describe``, ``pretrain``, ``finetune``.

Every user error is one line on stderr and exit status 2; with ``--json`` the last line
of stdout is one JSON object. relbench's progress prints go to stderr so that stdout
stays machine-readable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Callable, Sequence

from relcore.errors import RelcoreError

# Before torch loads: spinning OpenMP workers stall badly when cores are shared.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _add_dataset_args(p: argparse.ArgumentParser, db_cut: bool = True) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relcore", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    describe = sub.add_parser("describe", help="tables, columns by stype, keys, task sizes")
    _add_dataset_args(describe, db_cut=False)
    describe.set_defaults(run=_run_describe, render=_render_describe)

    from relcore import pretrain_cli, finetune_cli

    pretrain_cli.add_parser(sub, _add_dataset_args)
    finetune_cli.add_parser(sub, _add_dataset_args)
    return parser


def _run_describe(args: argparse.Namespace) -> dict:
    from relcore.describe import describe_dataset

    return describe_dataset(spec_from_args(args))


def _render_describe(info: dict) -> str:
    from relcore.describe import format_description

    return format_description(info)


def spec_from_args(args: argparse.Namespace):
    from relcore.data import DatasetSpec

    return DatasetSpec(args.dataset, raw_dir=args.raw_dir, time_cols=tuple(args.time_col),
                       db_cut=getattr(args, "db_cut", "test"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], dict] = args.run
    try:
        with contextlib.redirect_stdout(sys.stderr):  # relbench prints progress to stdout
            result = run(args)
    except RelcoreError as exc:
        print(f"relcore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"relcore {args.command}: interrupted", file=sys.stderr)
        return 130
    if not args.json and getattr(args, "render", None):
        print(args.render(result))
    if args.json:
        print(json.dumps(result, default=str))
    return 0
