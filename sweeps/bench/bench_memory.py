"""Peak memory of a fine-tuning trial on rel-f1, and how much of it is the allocator's.

A 3-layer rel-f1 trial of the paper grid (batch 512, fan-out 128 per hop) reached
~10 GiB of RSS in a Ray worker, and two of them at once on a 24 GiB host made Ray's
memory monitor kill one. This script runs the same fine-tuning loop
(:func:`relcore.finetune.finetune`, ResNet-SAGE, regime B, one torch thread) in a fresh
child process per variant of glibc's allocator and prints, per variant, the RSS after the
first step, the peak RSS over ``--steps`` steps and the median seconds per step, with
ratios against the default allocator measured in the same run:

- ``default``: glibc as the sweep runs it;
- ``mmap-4MiB``: ``MALLOC_MMAP_THRESHOLD_=4194304``: every block of 4 MiB or more is
  mapped on allocation and returned on free, so freed memory cannot fragment the heap;
  its peak is close to what the step's tensors need at once;
- ``trim-per-step``: ``malloc_trim(0)`` after every step.

    .venv/bin/python sweeps/bench/bench_memory.py --raw-dir ../shared/data/ergast-f1 \\
        --batch 256 --out sweeps/bench/results/memory.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import psutil

from common import Report, load_f1, step_timer

VARIANTS = {
    "default": {},
    "mmap-4MiB": {"MALLOC_MMAP_THRESHOLD_": str(4 * 2**20)},
    "trim-per-step": {"RELCORE_BENCH_TRIM": "1"},
}


def rss_gib() -> float:
    return psutil.Process().memory_info().rss / 2**30


def peak_rss_gib() -> float:
    """The process's peak RSS so far (Linux: ``ru_maxrss`` is in KiB; the variants are glibc's)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child(args: argparse.Namespace) -> None:
    """One variant, in this process: print a JSON line of its measurements."""
    import ctypes

    import torch

    from relcore.data import load_task
    from relcore.finetune import FinetuneConfig, finetune
    from relcore.models import BackboneConfig

    torch.set_num_threads(1)
    spec, dataset, graph, _ = load_f1(args.raw_dir)
    task = load_task(spec, dataset, args.task)
    trim = ctypes.CDLL("libc.so.6").malloc_trim if os.environ.get("RELCORE_BENCH_TRIM") else None
    clock, median_step = step_timer()
    after_first: list[float] = []
    before = rss_gib()

    def callback(step, metrics, checkpoint=None):
        clock(step, metrics, checkpoint)
        if trim is not None:
            trim(0)
        if step == 1:
            after_first.append(peak_rss_gib())
        return False

    cfg = FinetuneConfig(mode="B", max_steps=args.steps, eval_every=10**9, device="cpu", batch_size=args.batch)
    finetune(graph, task, args.task, cfg, callback=callback,
             backbone_config=BackboneConfig(table_model="resnet", layers=args.layers, aggr="mean"))
    print(json.dumps({"before": before, "first": after_first[0], "peak": peak_rss_gib(),
                      "step_s": median_step(args.skip)}), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--raw-dir", default=os.environ.get("RELCORE_F1_RAW_DIR"))
    p.add_argument("--task", default="driver-position")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=256, help="512 is the paper's (peak ~2x the memory)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--skip", type=int, default=3, help="first steps left out of the median")
    p.add_argument("--out", help="markdown report, rewritten after every line")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)

    out = Report.start(args.out, f"Fine-tuning memory on rel-f1 ({args.task}, ResNet-SAGE B, {args.layers} layers, "
                       f"batch {args.batch}, fan-out 128 per hop)", "1 torch thread, one child process per variant")
    out(f"\n{args.steps} steps per variant; RSS in GiB (`ru_maxrss` for peaks); s/step the median after step "
        f"{args.skip}.\n")
    out("| allocator | RSS before | peak after step 1 | peak over all steps | s/step | peak vs default | "
        "s/step vs default |")
    out("|---|---|---|---|---|---|---|")
    base = None
    for name, env in VARIANTS.items():
        cmd = [sys.executable, __file__, "--child", "--raw-dir", args.raw_dir, "--task", args.task,
               "--layers", str(args.layers), "--batch", str(args.batch), "--steps", str(args.steps),
               "--skip", str(args.skip)]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
        if done.returncode != 0:
            raise SystemExit(f"bench_memory: variant {name} failed: {done.stderr.strip().splitlines()[-1:]}")
        m = json.loads(done.stdout.strip().splitlines()[-1])
        base = base or m
        out(f"| {name} | {m['before']:.2f} | {m['first']:.2f} | {m['peak']:.2f} | {m['step_s']:.3f} | "
            f"{m['peak'] / base['peak']:.2f}x | {m['step_s'] / base['step_s']:.2f}x |")
    out(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
