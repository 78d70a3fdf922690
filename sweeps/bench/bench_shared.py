"""Shared message passing (``relcore.models.plan``) against per-occurrence computation.

One fine-tuning step (forward + backward + Adam, plan building included) on the same
rel-f1 training batches both ways, interleaved, for 2 and 3 layers, both table models,
regimes B (everything trains) and P (frozen backbone, tables encoded once), and both batch
orders (``random``: seeds of any timestamps; ``time``: seeds of a few whole timestamps).
Batch 512, fan-out 128 per hop (the paper's), 1 torch thread (a sweep trial's budget).
Sampling is the same for both paths and reported apart. Per configuration the step time is
the median over batches of the best of ``--repeats`` runs per batch.

The last line is one JSON object for the 3-layer B step of the better order.

    .venv/bin/python sweeps/bench/bench_shared.py --raw-dir ../shared/data/ergast-f1 \\
        --out sweeps/bench/results/shared.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common import Report, load_f1

from relcore.data import load_task
from relcore.finetune import SplitTable, TaskModel, _train_mode, epoch_order, freeze_for_mode
from relcore.models import BackboneConfig, GraphMeta, RDLBackbone
from relcore.models.plan import trimmed_plan
from relcore.sampling import TemporalNeighborSampler


@dataclass
class Measured:
    before_s: float
    after_s: float
    sample_s: float
    nodes: int
    per_occurrence: int  # rows the trimmed plan computes, all layers
    distinct: int  # rows the shared plan computes, all layers


def rows_computed(plan) -> int:
    return sum(sum(layer.num_out.values()) for layer in plan.layers)


def measure(graph, task, train: SplitTable, table_model: str, layers: int, mode: str, order: str,
            batches: int, repeats: int, seed: int) -> Measured:
    torch.manual_seed(seed)
    model = TaskModel(RDLBackbone(BackboneConfig(table_model=table_model, layers=layers),
                                  GraphMeta.from_graph(graph)), task.entity_table)
    params = freeze_for_mode(model, mode)
    optimizer = torch.optim.Adam(params, lr=1e-4, fused=True)
    row_cache = None
    if mode == "P":
        model.backbone.eval()
        row_cache = model.backbone.encode_tables(graph.data)
    sampler = TemporalNeighborSampler(graph, 128, num_layers=layers)
    gen = torch.Generator().manual_seed(seed)
    perm = epoch_order(train.times, order, gen)
    times: dict[bool, list[float]] = {False: [], True: []}
    sample_s, nodes, each, shared = [], [], [], []
    for i in range(batches):
        idx = perm[i * 512:(i + 1) * 512]
        start = time.perf_counter()
        batch = sampler.sample(task.entity_table, train.ids[idx], train.times[idx], generator=gen)
        sample_s.append(time.perf_counter() - start)
        nodes.append(sum(batch[t].num_nodes for t in batch.node_types))
        each.append(rows_computed(trimmed_plan(
            {t: batch[t].num_sampled_nodes for t in batch.node_types},
            {et: batch[et].num_sampled_edges for et in batch.edge_types},
            {et: batch[et].edge_index for et in batch.edge_types}, layers)))
        model.backbone.share = True
        shared.append(rows_computed(model.backbone.plan(batch)))
        best = {False: float("inf"), True: float("inf")}
        for _ in range(repeats):
            for share in (False, True):  # interleaved: both see the same machine state
                model.backbone.share = share
                _train_mode(model, mode)
                start = time.perf_counter()
                z = model(batch, row_cache)
                loss = F.binary_cross_entropy_with_logits(z, train.y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                best[share] = min(best[share], time.perf_counter() - start)
        for share in best:
            times[share].append(best[share])
    med = statistics.median
    return Measured(med(times[False]), med(times[True]), med(sample_s), int(med(nodes)), int(med(each)),
                    int(med(shared)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--raw-dir", default=os.environ.get("RELCORE_F1_RAW_DIR"))
    p.add_argument("--task", default="driver-dnf")
    p.add_argument("--batches", type=int, default=3, help="training batches per configuration")
    p.add_argument("--repeats", type=int, default=2, help="runs per batch and path (best kept)")
    p.add_argument("--table-models", default="linear,resnet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="markdown report, rewritten after every line")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Report.start(args.out, f"Shared message passing, one fine-tuning step on rel-f1 {args.task} "
                       "(batch 512, fan-out 128 per hop)", "1 torch thread")
    spec, dataset, graph, _ = load_f1(args.raw_dir)
    task = load_task(spec, dataset, args.task)
    train = SplitTable.of(task, "train")
    out("\n| table model | layers | regime | order | nodes | rows computed, per occurrence | shared | "
        "sampling s | step s, per occurrence | step s, shared | speed-up |")
    out("|---|---|---|---|---|---|---|---|---|---|---|")
    best_b3: dict[str, tuple[str, Measured]] = {}
    for table_model in [t.strip() for t in args.table_models.split(",") if t.strip()]:
        for layers in (2, 3):
            for mode in ("B", "P"):
                for order in ("random", "time"):
                    m = measure(graph, task, train, table_model, layers, mode, order, args.batches, args.repeats,
                                args.seed)
                    out(f"| {table_model} | {layers} | {mode} | {order} | {m.nodes:,} | {m.per_occurrence:,} | "
                        f"{m.distinct:,} | {m.sample_s:.3f} | {m.before_s:.3f} | {m.after_s:.3f} | "
                        f"**{m.before_s / m.after_s:.2f}x** |")
                    if layers == 3 and mode == "B":
                        prev = best_b3.get(table_model)
                        if prev is None or m.before_s / m.after_s > prev[1].before_s / prev[1].after_s:
                            best_b3[table_model] = (order, m)
    out(f"\nload average at end {os.getloadavg()[0]:.2f}")
    for table_model, (order, m) in best_b3.items():
        print(json.dumps({"task": args.task, "table_model": table_model, "layers": 3, "order": order,
                          "before_s": round(m.before_s, 4), "after_s": round(m.after_s, 4),
                          "ratio": round(m.before_s / m.after_s, 3), "nodes": m.nodes, "distinct": m.distinct}))


if __name__ == "__main__":
    main()
