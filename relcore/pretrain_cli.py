"""``relcore pretrain DATASET --backbone ... --layers ... --aggr ... --corruption P --out DIR``."""

from __future__ import annotations

import argparse

import torch

from relcore.dataset_args import add_dataset_args, spec_from_args
from relcore.errors import RelcoreError


def add_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="contrastive pretraining of a backbone (no labels)")
    add_dataset_args(p)
    from relcore.models.config import AGGRS, TABLE_MODELS, BackboneConfig
    from relcore.pretrain import PretrainConfig

    bb, cfg = BackboneConfig(), PretrainConfig()  # the library's defaults, not restated here
    p.add_argument("--backbone", default=bb.table_model, choices=TABLE_MODELS)
    p.add_argument("--layers", type=int, default=bb.layers)
    p.add_argument("--aggr", default=bb.aggr, choices=AGGRS)
    p.add_argument("--corruption", type=float, default=cfg.corruption)
    p.add_argument("--corruption-mode", default=cfg.corruption_mode, choices=["marginal", "uniform-unique"])
    p.add_argument("--max-steps", type=int, default=cfg.max_steps)
    p.add_argument("--eval-every", type=int, default=cfg.eval_every)
    p.add_argument("--time-limit", type=float, default=cfg.time_limit_s, help="seconds")
    p.add_argument("--seed", type=int, default=cfg.seed)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--out", required=True, help="folder for backbone.pt and history.json")
    p.add_argument("--state", help="resumable run: save the loop state here at every evaluation, "
                   "and continue from it (and --out's backbone.pt) when it exists")
    p.set_defaults(run=run, render=render)


def run(args: argparse.Namespace) -> dict:
    from relcore.data import get_db, load_dataset
    from relcore.graph import build_graph
    from relcore.models import BackboneConfig
    from relcore.pretrain import PretrainConfig, pretrain

    if not 0.0 < args.corruption < 1.0:
        raise RelcoreError(f"--corruption must lie in (0, 1), got {args.corruption}")
    if args.max_steps < 1:
        raise RelcoreError("--max-steps must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = BackboneConfig(table_model=args.backbone, layers=args.layers, aggr=args.aggr)
    config = PretrainConfig(corruption=args.corruption, corruption_mode=args.corruption_mode,
                            max_steps=args.max_steps, eval_every=args.eval_every,
                            time_limit_s=args.time_limit, seed=args.seed)
    spec = spec_from_args(args)
    dataset = load_dataset(spec)
    graph = build_graph(get_db(dataset, spec.db_cut))
    cutoff = getattr(dataset, "val_timestamp", None)
    max_time = int(cutoff.timestamp()) if cutoff is not None else None
    return pretrain(graph, backbone, config, max_time=max_time, out_dir=args.out, state_path=args.state).summary()


def render(result: dict) -> str:
    i, f = result["initial"], result["final"]
    return (f"{result['steps']} steps in {result['seconds']:.1f}s ({result['steps_per_second']:.2f}/s), "
            f"stopped: {result['stop_reason']}\n"
            + "\n".join(f"  {k}: {i[k]:.3f} -> {f[k]:.3f}" for k in ("loss", "row", "link", "context"))
            + f"\n  best val loss {result['best_val_loss']:.3f} at step {result['best_step']}; "
              f"checkpoint {result['checkpoint']}")
