"""Does composing batches from whole timestamps change what fine-tuning learns?

``--batch-order time`` lets shared message passing compute a timestamp's common
neighbourhood once; every seed is still visited once per epoch with its own subgraph, only
its batch-mates change. This script fine-tunes regime B on rel-f1's driver tasks with both
orders at equal steps (the reference protocol: lr 5e-3, fan-outs halving per hop, L1 for
regression, capped at ``--max-steps``), for 2 and 3 layers and ``--seeds`` seeds, and
writes the best validation metric of each run, its test metric, and the seconds per step
(evaluation and sampling included).

    .venv/bin/python sweeps/bench/bench_batch_order.py --raw-dir ../shared/data/ergast-f1 \\
        --out sweeps/bench/results/batch-order.md --csv sweeps/bench/results/batch-order.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
from dataclasses import replace
from pathlib import Path

import torch

from common import Report

from relcore.data import DatasetSpec, get_db, load_dataset, load_task
from relcore.finetune import FinetuneConfig, finetune, reference_code_protocol, train_rows
from relcore.graph import build_graph
from relcore.models import BackboneConfig

COLUMNS = ["task", "layers", "order", "seed", "metric", "val", "test", "steps", "seconds"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--raw-dir", default=os.environ.get("RELCORE_F1_RAW_DIR"))
    p.add_argument("--tasks", default="driver-dnf,driver-position,driver-top3")
    p.add_argument("--layers", default="2,3")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=150, help="cap on the reference protocol's 20 epochs")
    p.add_argument("--table-model", default="linear")
    p.add_argument("--db-cut", default="full", choices=["test", "full"])
    p.add_argument("--out", help="markdown report")
    p.add_argument("--csv", help="one row per run (appended as runs finish; finished runs are skipped)")
    p.add_argument("--summary-only", action="store_true", help="write the report from --csv, run nothing")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Report.start(args.out, "Batch order: validation at equal steps (rel-f1, regime B, reference protocol)",
                       f"1 torch thread; {args.table_model} table model; database cut {args.db_cut}; "
                       f"at most {args.max_steps} steps")
    done: list[dict] = []
    path = Path(args.csv) if args.csv else None
    if path is not None and path.is_file():
        done = list(csv.DictReader(path.open()))
    if args.summary_only:
        out(f"\nFrom {len(done)} finished runs of `{path}`.")
        summarize(done, out)
        return
    spec = DatasetSpec("rel-f1", raw_dir=args.raw_dir, db_cut=args.db_cut)
    dataset = load_dataset(spec)
    graph = build_graph(get_db(dataset, args.db_cut))
    finished = {(r["task"], r["layers"], r["order"], r["seed"]) for r in done}
    for task_name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        task = load_task(spec, dataset, task_name)
        for layers in [int(x) for x in args.layers.split(",")]:
            for seed in range(args.seeds):
                for order in ("random", "time"):
                    if (task_name, str(layers), order, str(seed)) in finished:
                        continue
                    config = reference_code_protocol(FinetuneConfig(mode="B", seed=seed, device="cpu"),
                                                     train_rows(task), layers)
                    config = replace(config, max_steps=min(config.max_steps, args.max_steps), batch_order=order)
                    result = finetune(graph, task, task_name, config,
                                      backbone_config=BackboneConfig(table_model=args.table_model, layers=layers))
                    row = {"task": task_name, "layers": layers, "order": order, "seed": seed,
                           "metric": result.metric, "val": result.val[result.metric],
                           "test": result.test[result.metric], "steps": result.steps,
                           "seconds": round(result.seconds, 1)}
                    done.append({k: str(v) for k, v in row.items()})
                    if path is not None:
                        new = not path.is_file()
                        with path.open("a", newline="") as f:
                            w = csv.DictWriter(f, fieldnames=COLUMNS)
                            if new:
                                w.writeheader()
                            w.writerow(row)
                    print(row, flush=True)
    summarize(done, out)


def summarize(rows: list[dict], out: Report) -> None:
    """Per task and depth: mean ± sd over seeds of each order, and the paired difference
    (a cell shows the seeds both orders have finished)."""
    out("\n| task | layers | metric | seeds | val, random | val, time | time − random (paired) | "
        "s/step, random | s/step, time |")
    out("|---|---|---|---|---|---|---|---|---|")
    cells = sorted({(r["task"], r["layers"]) for r in rows})
    for task, layers in cells:
        seeds = {o: {r["seed"] for r in rows if (r["task"], r["layers"], r["order"]) == (task, layers, o)}
                 for o in ("random", "time")}
        both = seeds["random"] & seeds["time"]
        by = {o: sorted((r for r in rows if (r["task"], r["layers"], r["order"]) == (task, layers, o)
                         and r["seed"] in both), key=lambda r: int(r["seed"])) for o in ("random", "time")}
        if not both:
            continue
        val = {o: [float(r["val"]) for r in by[o]] for o in by}
        pairs = [t - r for r, t in zip(val["random"], val["time"])]
        per_step = {o: sum(float(r["seconds"]) for r in by[o]) / sum(int(r["steps"]) for r in by[o]) for o in by}
        metric = by["random"][0]["metric"]
        out(f"| {task} | {layers} | {metric} | {len(both)} | {_ms(val['random'])} | {_ms(val['time'])} | {_ms(pairs)} | "
            f"{per_step['random']:.2f} | {per_step['time']:.2f} |")


def _ms(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.4f} ± {sd:.4f}"


if __name__ == "__main__":
    main()
