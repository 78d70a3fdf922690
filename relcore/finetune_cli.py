"""``relcore finetune DATASET --task NAME --mode B|P|PF [--checkpoint PATH]``."""

from __future__ import annotations

import argparse

import torch

from relcore.dataset_args import add_dataset_args, spec_from_args
from relcore.errors import RelcoreError


def _fanouts(text: str) -> tuple[int, ...] | int:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad --fanouts '{text}'") from exc
    return values[0] if len(values) == 1 else values


def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="train a task model in regime B, P or PF")
    add_dataset_args(p)
    p.add_argument("--task", required=True)
    p.add_argument("--mode", required=True, choices=["B", "P", "PF", "R"],
                   help="B scratch, P pretrained frozen, PF pretrained fine-tuned, R random frozen (control)")
    p.add_argument("--checkpoint", help="pretrained backbone.pt (P and PF)")
    from relcore.finetune import FinetuneConfig
    from relcore.models.config import AGGRS, TABLE_MODELS, BackboneConfig

    bb, cfg = BackboneConfig(), FinetuneConfig()  # the library's defaults, not restated here
    p.add_argument("--backbone", default=bb.table_model, choices=TABLE_MODELS, help="for modes B and R")
    p.add_argument("--layers", type=int, default=bb.layers, help="for modes B and R")
    p.add_argument("--aggr", default=bb.aggr, choices=AGGRS, help="for modes B and R")
    p.add_argument("--lr", type=float, default=cfg.lr)
    p.add_argument("--batch-size", type=int, default=cfg.batch_size)
    p.add_argument("--max-steps", type=int, default=cfg.max_steps)
    p.add_argument("--eval-every", type=int, default=cfg.eval_every)
    p.add_argument("--fanouts", type=_fanouts, default=cfg.fanouts, help="per hop, e.g. 128 or 128,64")
    p.add_argument("--loss", default=cfg.regression_loss, choices=["mse", "l1"], help="regression loss")
    p.add_argument("--time-limit", type=float, default=cfg.time_limit_s, help="seconds")
    p.add_argument("--precision", default=cfg.precision, choices=["fp32", "bf16"],
                   help="bf16: mixed-precision forward passes (faster on AVX512-BF16/AMX CPUs and GPUs)")
    p.add_argument("--protocol", default="paper", choices=["paper", "reference"],
                   help="reference: as the paper's reference code fine-tunes (lr 5e-3, fan-outs halving per "
                   "hop, L1, 20 epochs, a validation every epoch, patience 10); replaces --lr --fanouts "
                   "--loss --eval-every, and --max-steps only caps it")
    p.add_argument("--batch-order", default=cfg.batch_order, choices=["random", "time"],
                   help="random: seeds of any timestamps share a batch; time: the seeds of a few whole "
                   "timestamps do (each seed still once per epoch, with its own subgraph)")
    p.add_argument("--seed", type=int, default=cfg.seed)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--state", help="resumable run: save the loop state here at every evaluation, "
                   "and continue from it when it exists (e.g. a batch job resubmitted after its time limit)")
    p.set_defaults(run=run, render=render)


def run(args: argparse.Namespace) -> dict:
    from relcore.data import get_db, load_dataset, load_task
    from relcore.finetune import FinetuneConfig, finetune, reference_code_protocol, train_rows
    from relcore.graph import build_graph
    from relcore.models import BackboneConfig, read_checkpoint

    if args.max_steps < 1:
        raise RelcoreError("--max-steps must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = spec_from_args(args)
    dataset = load_dataset(spec)
    task = load_task(spec, dataset, args.task)  # before get_db: some tasks alter the database
    graph = build_graph(get_db(dataset, spec.db_cut))
    config = FinetuneConfig(mode=args.mode, lr=args.lr, batch_size=args.batch_size,
                            max_steps=args.max_steps, eval_every=args.eval_every,
                            fanouts=args.fanouts, regression_loss=args.loss,
                            time_limit_s=args.time_limit, precision=args.precision, seed=args.seed,
                            batch_order=args.batch_order)
    backbone = BackboneConfig(table_model=args.backbone, layers=args.layers, aggr=args.aggr)
    if args.protocol == "reference":  # its fan-outs follow the depth: the checkpoint's for P and PF
        layers = read_checkpoint(args.checkpoint).config.layers if args.checkpoint else backbone.layers
        config = reference_code_protocol(config, train_rows(task), layers)
    result = finetune(graph, task, args.task, config, backbone_config=backbone, checkpoint=args.checkpoint,
                      state_path=args.state)
    return {**result.summary(), "config": config.to_dict()}


def render(result: dict) -> str:
    fmt = lambda d: ", ".join(f"{k} {v:.4f}" for k, v in d.items())  # noqa: E731
    return (f"{result['task']} {result['mode']}: best step {result['best_step']} of {result['steps']} "
            f"({result['seconds']:.1f}s, stopped: {result['stop_reason']})\n"
            f"  val:  {fmt(result['val'])}\n  test: {fmt(result['test'])}")
