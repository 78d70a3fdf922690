"""What resumability costs a fine-tuning trial on rel-f1: the state saved per evaluation
against the training time between two evaluations, measured in one run.

A sweep's fine-tuning trial saves its loop state (:mod:`relcore.resume`) at every
evaluation and Tune copies it into the trial's checkpoint (``sweeps/trainables.py``:
one copy into the checkpoint directory, one into the sweep's storage). Per (backbone,
regime, layers), this script runs the paper's fine-tuning loop (1 thread, batch 512,
fan-out 128) for ``--steps`` steps with a ``state_path``, then times, best of
``--repeats``, what one evaluation adds: ``save_state`` of that real state plus two
file copies. Against it: the median training step times the paper's 100 steps between
evaluations. The ratio is the share of a trial's time spent on resumability.

    .venv/bin/python sweeps/bench/bench_resume.py --raw-dir ../shared/data/ergast-f1 \\
        --out sweeps/bench/results/resume.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from common import Report, cost_only_checkpoint, load_f1, step_timer

from relcore.data import load_task
from relcore.finetune import FinetuneConfig, finetune
from relcore.models import BackboneConfig
from relcore.resume import save_state

EVAL_EVERY = 100  # the paper preset's steps between evaluations


def per_evaluation_seconds(state_file: Path, repeats: int) -> float:
    """Best-of-``repeats`` seconds to save the state and copy it twice, as a trial does."""
    state = torch.load(state_file, map_location="cpu", weights_only=False)
    work = Path(tempfile.mkdtemp(prefix="relcore-resume-bench-", dir=state_file.parent))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        save_state(work / "state.pt", state)
        shutil.copy(work / "state.pt", work / "checkpoint-dir.pt")
        shutil.copy(work / "checkpoint-dir.pt", work / "storage.pt")
        best = min(best, time.perf_counter() - t0)
    shutil.rmtree(work)
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raw-dir", default=os.environ.get("RELCORE_F1_RAW_DIR"))
    p.add_argument("--task", default="driver-dnf")
    p.add_argument("--steps", type=int, default=6, help="fine-tuning steps per configuration")
    p.add_argument("--skip", type=int, default=2, help="first steps left out of the median")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="markdown report, rewritten after every line")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Report.start(args.out, "Resumable fine-tuning: state saved per evaluation vs training between evaluations",
                       f"rel-f1 {args.task}, 1 torch thread")
    spec, dataset, graph, max_time = load_f1(args.raw_dir)
    task = load_task(spec, dataset, args.task)
    work = Path(tempfile.mkdtemp(prefix="relcore-resume-bench-"))
    out("\n| backbone | regime | layers | state MiB | save + 2 copies s | s/step | "
        f"{EVAL_EVERY} steps s | share of trial time |")
    out("|---|---|---|---|---|---|---|---|")
    for table_model in ("linear", "resnet"):
        for layers in (2, 3):
            backbone = BackboneConfig(table_model=table_model, layers=layers)
            pretrained = cost_only_checkpoint(graph, backbone, max_time, work / f"{table_model}-L{layers}")
            for mode in ("B", "P"):
                state_file = work / f"{table_model}-L{layers}-{mode}.pt"
                clock, median_step = step_timer()
                cfg = FinetuneConfig(mode=mode, max_steps=args.steps, eval_every=args.steps, device="cpu")
                finetune(graph, task, args.task, cfg, backbone_config=backbone if mode == "B" else None,
                         checkpoint=pretrained if mode == "P" else None,
                         callback=clock, state_path=state_file)
                step = median_step(args.skip)
                save = per_evaluation_seconds(state_file, args.repeats)
                mib = state_file.stat().st_size / 2**20
                out(f"| {table_model} | {mode} | {layers} | {mib:.1f} | {save:.3f} | {step:.3f} | "
                    f"{EVAL_EVERY * step:.1f} | **{save / (save + EVAL_EVERY * step):.2%}** |")
    shutil.rmtree(work, ignore_errors=True)
    out(f"\nP&F saves what B saves (every parameter trains); load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
