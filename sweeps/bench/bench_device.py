"""relcore on an accelerator against relcore on one CPU thread, side by side in one run.

The sweep gives every trial one CPU (``--cpus-per-trial 1``); this asks what one trial
gains from ``--gpus-per-trial`` on the same machine. Both contenders are relcore's own
loops (:func:`relcore.pretrain.pretrain`, :func:`relcore.finetune.finetune`) with
``device`` set, on rel-f1, with one torch CPU thread each (sampling stays on the CPU):

1. **Pretraining** seconds/step per backbone (paper defaults: 2 layers, sum, corruption
   0.2, batch 64, 64 nodes/type x 3 iterations).
2. **Fine-tuning** seconds/step on ``--task`` (batch 512, fan-out 128 per hop,
   ResNet-SAGE, ``--depths`` GNN layers), regimes B and P, fp32 and bf16 on the
   accelerator.
3. **One cell of the paper grid, whole, on the accelerator**: a full pretraining trial
   (ResNet-SAGE, 2000 steps) and the B, P, P&F fine-tuning trials on ``--task`` with the
   paper's defaults (early stopping on validation): wall seconds and metrics, to set
   against the CPU sweep's trials of the same keys.

A step's time is the gap between two consecutive loop callbacks, so it covers sampling,
host-to-device copies, forward, backward and the optimiser; steps that ran a validation
and the first ``--skip`` steps (warm-up, allocator growth) are left out; the median of
the rest is reported. The loops read the loss back every step, so GPU work is finished
inside the step it belongs to.

    python sweeps/bench/bench_device.py --raw-dir ../shared/data/ergast-f1 --out results/device.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from common import Report, cost_only_checkpoint, step_timer

from relcore.data import DatasetSpec, load_dataset, load_task
from relcore.finetune import FinetuneConfig, finetune
from relcore.graph import build_graph
from relcore.models import BackboneConfig
from relcore.pretrain import PretrainConfig, pretrain

NEVER = 10**9  # eval_every for timing runs: validate only at the last step


def pretrain_step(graph, max_time, table_model: str, device: str, steps: int, skip: int) -> float:
    clock, median_step = step_timer()
    cfg = PretrainConfig(max_steps=steps, eval_every=NEVER, val_subgraphs=1, device=device)
    pretrain(graph, BackboneConfig(table_model=table_model), cfg, max_time, callback=clock)
    return median_step(skip)


def finetune_step(graph, task, task_name: str, mode: str, device: str, precision: str, steps: int,
                  skip: int, checkpoint: str | None, layers: int = 2) -> float:
    clock, median_step = step_timer()
    cfg = FinetuneConfig(mode=mode, max_steps=steps, eval_every=NEVER, device=device, precision=precision)
    backbone = BackboneConfig(table_model="resnet", layers=layers) if mode == "B" else None
    finetune(graph, task, task_name, cfg, backbone_config=backbone,
             checkpoint=checkpoint if mode != "B" else None, callback=clock)
    return median_step(skip)


def section_pretrain(out: Report, graph, max_time: int, args) -> None:
    out("\n## 1. Pretraining s/step (median)\n")
    out(f"| backbone | {args.device} | cpu, 1 thread | speed-up |")
    out("|---|---|---|---|")
    for tm in ("linear", "resnet"):
        acc = pretrain_step(graph, max_time, tm, args.device, args.pt_steps, args.skip)
        cpu = pretrain_step(graph, max_time, tm, "cpu", args.cpu_pt_steps, args.skip)
        out(f"| {tm}-SAGE | {acc:.4f} | {cpu:.4f} | **{cpu / acc:.1f}x** |")


def section_finetune(out: Report, graph, task, max_time: int, work: Path, args) -> None:
    out(f"\n## 2. Fine-tuning s/step on {args.task} (median; ResNet-SAGE, batch 512, fan-out 128 per hop)\n")
    out(f"| layers | regime | {args.device} fp32 | {args.device} bf16 | cpu fp32, 1 thread | speed-up fp32 |")
    out("|---|---|---|---|---|---|")
    for layers in args.depths:
        tiny = cost_only_checkpoint(graph, BackboneConfig(table_model="resnet", layers=layers), max_time,
                                    work / f"L{layers}", args.device)
        for mode in ("B", "P"):
            def run(device: str, precision: str, steps: int) -> float:
                return finetune_step(graph, task, args.task, mode, device, precision, steps, args.skip, tiny, layers)
            fp32, bf16 = run(args.device, "fp32", args.ft_steps), run(args.device, "bf16", args.ft_steps)
            cpu = run("cpu", "fp32", args.cpu_ft_steps)
            out(f"| {layers} | {mode} | {fp32:.4f} | {bf16:.4f} | {cpu:.4f} | **{cpu / fp32:.1f}x** |")


def section_cell(out: Report, graph, task, max_time: int, work: Path, args) -> None:
    out(f"\n## 3. One grid cell, whole, on {args.device} (paper defaults; ResNet-SAGE, 2 layers, sum, "
        f"corruption 0.2; wall limit {args.cell_limit:.0f} s per trial)\n")
    out("| trial | wall s | steps | stop | best val | its test |")
    out("|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    pre = pretrain(graph, BackboneConfig(table_model="resnet"),
                   PretrainConfig(device=args.device, time_limit_s=args.cell_limit), max_time, out_dir=work / "cell")
    out(f"| pretrain | {time.perf_counter() - t0:.1f} | {pre.steps} | {pre.stop_reason} | "
        f"loss {pre.best['loss']:.4f} | - |")
    for mode in ("B", "P", "PF"):
        t0 = time.perf_counter()
        cfg = FinetuneConfig(mode=mode, device=args.device, time_limit_s=args.cell_limit)
        res = finetune(graph, task, args.task, cfg,
                       backbone_config=BackboneConfig(table_model="resnet") if mode == "B" else None,
                       checkpoint=None if mode == "B" else pre.checkpoint)
        out(f"| {args.task} {mode} | {time.perf_counter() - t0:.1f} | {res.steps} | {res.stop_reason} | "
            f"{res.metric} {res.val[res.metric]:.4f} | {res.test[res.metric]:.4f} |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--raw-dir", default=os.environ.get("RELCORE_F1_RAW_DIR"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--task", default="driver-dnf")
    p.add_argument("--pt-steps", type=int, default=60, help="timed pretraining steps on the accelerator")
    p.add_argument("--ft-steps", type=int, default=40, help="timed fine-tuning steps on the accelerator")
    p.add_argument("--cpu-pt-steps", type=int, default=20)
    p.add_argument("--cpu-ft-steps", type=int, default=10)
    p.add_argument("--skip", type=int, default=3, help="first steps left out of the median")
    p.add_argument("--depths", default="2,3", help="GNN depths of section 2 (3 hops: 2.5M-node batches on rel-f1)")
    p.add_argument("--no-cell", action="store_true", help="skip section 3 (the whole grid cell)")
    p.add_argument("--cell-limit", type=float, default=4 * 3600.0,
                   help="wall-time limit per section-3 trial, seconds (a stopper, as in the sweep)")
    p.add_argument("--out", help="markdown report, rewritten after every line")
    args = p.parse_args(argv)
    args.depths = [int(d) for d in args.depths.split(",") if d.strip()]
    torch.set_num_threads(1)  # the sweep's per-trial budget, for both contenders
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"error: --device {args.device} but torch sees no CUDA device")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    out = Report.start(args.out, f"relcore on {name} vs one CPU thread (rel-f1)", "1 torch thread for every contender")
    spec = DatasetSpec("rel-f1", raw_dir=args.raw_dir)
    dataset = load_dataset(spec)
    t0 = time.perf_counter()
    graph = build_graph(dataset.get_db(), cache_root=tempfile.mkdtemp(prefix="relcore-graph-"))
    task = load_task(spec, dataset, args.task)
    out(f"\ngraph and task tables built in {time.perf_counter() - t0:.1f} s")
    max_time = int(dataset.val_timestamp.timestamp())
    work = Path(tempfile.mkdtemp(prefix="relcore-ckpt-"))

    sections = [lambda: section_pretrain(out, graph, max_time, args),
                lambda: section_finetune(out, graph, task, max_time, work, args)]
    if not args.no_cell:
        sections.append(lambda: section_cell(out, graph, task, max_time, work, args))
    failed = 0
    for run in sections:  # one lease, one try: a failing section must not cost the others
        try:
            run()
        except Exception:
            failed += 1
            out("\n```\n" + traceback.format_exc() + "```")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
