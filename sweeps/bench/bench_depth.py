"""What GNN depth costs in fine-tuning on rel-f1: batch size and step time for 2 vs 3 layers.

The paper samples 128 neighbours per node at every hop, as many hops as message-passing
layers. On rel-f1 the third hop is where batches explode: a driver's results lead to
their races, and every race leads back to all of its ~60 result and standing rows. This
script measures, in one run and on the same seeds, per depth:

- one temporal batch (``TemporalNeighborSampler``, batch 512): nodes, edges and the
  distinct rows the table models must encode;
- seconds per fine-tuning step of :func:`relcore.finetune.finetune` (ResNet-SAGE, paper
  defaults) in regime B and in regime P (frozen backbone, table encodings cached),
  one torch thread (the sweep's per-trial budget).

and prints the 3-layer / 2-layer ratios. Last, the temporal encoding on the 3-hop batch:
relcore's ``RelativeTimeEncoder`` (one encoding per distinct seed_time - time) against
relbench's ``HeteroTemporalEncoder`` (one per node), forward + backward, same weights;
and the first GraphSAGE layer reading inputs as look-ups (``relcore.models.factored``)
against materialised per-node inputs (``FACTOR_MIN_REPEATS`` = inf), forward + backward
of a B model on the same batches, interleaved.
Step time is the median gap between the loop's
callbacks after ``--skip`` warm-up steps (as ``bench_device.py``).

    .venv/bin/python sweeps/bench/bench_depth.py --raw-dir ../shared/data/ergast-f1 \\
        --out sweeps/bench/results/depth.md
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import torch

from common import Report, cost_only_checkpoint, load_f1, step_timer

from relcore.data import load_task
from relcore.finetune import FinetuneConfig, SplitTable, finetune
from relcore.models import BackboneConfig, GraphMeta, RDLBackbone
from relcore.sampling import TemporalNeighborSampler


def batch_size_of(graph, task, layers: int, batch: int, seed: int) -> tuple[int, int, int]:
    """Nodes, edges and distinct rows of one training batch at ``layers`` hops."""
    train = SplitTable.of(task, "train")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train.ids), generator=gen)[:batch]
    sampler = TemporalNeighborSampler(graph, 128, num_layers=layers)
    b = sampler.sample(task.entity_table, train.ids[idx], train.times[idx], generator=gen)
    nodes = sum(b[t].num_nodes for t in b.node_types)
    edges = sum(b[et].edge_index.size(1) for et in b.edge_types if "edge_index" in b[et])
    rows = sum(b[t].n_id.unique().numel() for t in b.node_types if b[t].num_nodes)
    return nodes, edges, rows


def step_seconds(graph, task, task_name: str, mode: str, layers: int, steps: int, skip: int,
                 checkpoint: str | None) -> float:
    clock, median_step = step_timer()
    cfg = FinetuneConfig(mode=mode, max_steps=steps, eval_every=10**9, device="cpu")
    finetune(graph, task, task_name, cfg,
             backbone_config=BackboneConfig(table_model="resnet", layers=layers) if mode == "B" else None,
             checkpoint=checkpoint if mode == "P" else None, callback=clock)
    return median_step(skip)


def time_encoder_ratio(graph, task, batch: int, seed: int, repeats: int) -> tuple[float, float, int, int]:
    """Best-of-``repeats`` seconds (relcore, relbench) for forward + backward of the
    temporal encoding of one 3-hop batch, and (nodes, distinct differences)."""
    from relbench.modeling.nn import HeteroTemporalEncoder

    train = SplitTable.of(task, "train")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train.ids), generator=gen)[:batch]
    b = TemporalNeighborSampler(graph, 128, num_layers=3).sample(task.entity_table, train.ids[idx],
                                                                 train.times[idx], generator=gen)
    ours = RDLBackbone(BackboneConfig(), GraphMeta.from_graph(graph)).temporal
    theirs = HeteroTemporalEncoder(list(ours.lin_dict.keys()), ours.lin_dict[next(iter(ours.lin_dict))].in_features)
    theirs.load_state_dict(ours.state_dict())
    timed = [t for t in ours.lin_dict if t in b.node_types and b[t].num_nodes]
    seed_time = train.times[idx]

    def run_ours():
        sum(o.sum() for o in ours({t: b[t].seed_time for t in timed}, {t: b[t].time for t in timed}).values()).backward()

    def run_theirs():
        sum(o.sum() for o in theirs(seed_time, {t: b[t].time for t in timed},
                                    {t: b[t].batch for t in timed}).values()).backward()

    best = {}
    for _ in range(repeats):  # interleaved
        for name, fn in (("ours", run_ours), ("theirs", run_theirs)):
            start = time.perf_counter()
            fn()
            best[name] = min(best.get(name, math.inf), time.perf_counter() - start)
    nodes = sum(b[t].num_nodes for t in timed)
    distinct = sum((b[t].seed_time - b[t].time).unique().numel() for t in timed)
    return best["ours"], best["theirs"], nodes, distinct


def factored_ratio(graph, task, layers: int, seed: int, repeats: int) -> tuple[float, float]:
    """Best seconds (look-ups, materialised) of a B forward + backward on the same batches."""
    import relcore.models.backbone as backbone_module
    from relcore.finetune import TaskModel

    train = SplitTable.of(task, "train")
    gen = torch.Generator().manual_seed(seed)
    sampler = TemporalNeighborSampler(graph, 128, num_layers=layers)
    batches = []
    for _ in range(repeats):
        idx = torch.randperm(len(train.ids), generator=gen)[:512]
        batches.append((sampler.sample(task.entity_table, train.ids[idx], train.times[idx], generator=gen), idx))
    model = TaskModel(RDLBackbone(BackboneConfig(table_model="resnet", layers=layers), GraphMeta.from_graph(graph)),
                      task.entity_table)
    default, best = backbone_module.FACTOR_MIN_REPEATS, {}
    try:
        for batch, idx in batches:
            for name, threshold in (("lookups", default), ("materialised", math.inf)):
                backbone_module.FACTOR_MIN_REPEATS = threshold
                start = time.perf_counter()
                z = model(batch)
                torch.nn.functional.binary_cross_entropy_with_logits(z, train.y[idx].float()).backward()
                model.zero_grad(set_to_none=True)
                best[name] = min(best.get(name, math.inf), time.perf_counter() - start)
    finally:
        backbone_module.FACTOR_MIN_REPEATS = default
    return best["lookups"], best["materialised"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--raw-dir", default=os.environ.get("RELCORE_F1_RAW_DIR"))
    p.add_argument("--tasks", default="driver-dnf", help="comma-separated rel-f1 entity tasks")
    p.add_argument("--steps", type=int, default=7, help="fine-tuning steps per measurement")
    p.add_argument("--skip", type=int, default=2, help="first steps left out of the median")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="markdown report, rewritten after every line")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Report.start(args.out, "Fine-tuning cost by GNN depth (rel-f1, fan-out 128 per hop, batch 512, 1 thread)",
                       "1 torch thread")
    spec, dataset, graph, max_time = load_f1(args.raw_dir)
    work = Path(tempfile.mkdtemp(prefix="relcore-depth-"))
    checkpoints = {layers: cost_only_checkpoint(graph, BackboneConfig(table_model="resnet", layers=layers),
                                                max_time, work / f"L{layers}") for layers in (2, 3)}

    out("\n| task | layers | nodes / batch | edges / batch | distinct rows | B s/step | P s/step |")
    out("|---|---|---|---|---|---|---|")
    ratios = []
    for task_name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        task = load_task(spec, dataset, task_name)
        by_depth = {}
        for layers in (2, 3):
            nodes, edges, rows = batch_size_of(graph, task, layers, 512, args.seed)
            b = step_seconds(graph, task, task_name, "B", layers, args.steps, args.skip, None)
            pp = step_seconds(graph, task, task_name, "P", layers, args.steps, args.skip, checkpoints[layers])
            by_depth[layers] = (nodes, b, pp)
            out(f"| {task_name} | {layers} | {nodes:,} | {edges:,} | {rows:,} | {b:.3f} | {pp:.3f} |")
        (n2, b2, p2), (n3, b3, p3) = by_depth[2], by_depth[3]
        ratios.append(f"| {task_name} | {n3 / n2:.1f}x | {b3 / b2:.1f}x | {p3 / p2:.1f}x |")
    out("\n| task | nodes, 3 / 2 layers | B step, 3 / 2 layers | P step, 3 / 2 layers |")
    out("|---|---|---|---|")
    for line in ratios:
        out(line)
    task = load_task(spec, dataset, args.tasks.split(",")[0].strip())
    ours, theirs, nodes, distinct = time_encoder_ratio(graph, task, 512, args.seed, repeats=3)
    out(f"\nTemporal encoding of one 3-hop {task.entity_table} batch ({nodes:,} timed nodes, {distinct:,} distinct "
        f"time differences), forward + backward, best of 3 interleaved: relcore per distinct difference "
        f"{ours:.3f} s, relbench `HeteroTemporalEncoder` per node {theirs:.3f} s: **{theirs / ours:.1f}x**")
    out("\n| layers | first layer on look-ups s | on materialised inputs s | speed-up |")
    out("|---|---|---|---|")
    for layers in (2, 3):
        lookups, materialised = factored_ratio(graph, task, layers, args.seed, repeats=3)
        out(f"| {layers} | {lookups:.3f} | {materialised:.3f} | **{materialised / lookups:.2f}x** |")
    out(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
