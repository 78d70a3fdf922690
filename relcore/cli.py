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

from relcore.dataset_args import add_dataset_args, spec_from_args
from relcore.errors import RelcoreError

# Before torch loads: spinning OpenMP workers stall badly when cores are shared.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relcore", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    describe = sub.add_parser("describe", help="tables, columns by stype, keys, task sizes")
    add_dataset_args(describe, db_cut=False)
    describe.set_defaults(run=_run_describe, render=_render_describe)

    from relcore import pretrain_cli, finetune_cli

    pretrain_cli.add_parser(sub)
    finetune_cli.add_parser(sub)
    return parser


def _run_describe(args: argparse.Namespace) -> dict:
    from relcore.describe import describe_dataset

    return describe_dataset(spec_from_args(args))


def _render_describe(info: dict) -> str:
    from relcore.describe import format_description

    return format_description(info)


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
