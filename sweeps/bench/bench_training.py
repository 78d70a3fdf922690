"""Training speed of relcore against its peers, measured side by side in one run.

1. **Pretraining** steps/s per backbone (``linear``, ``resnet``; 2 layers, sum,
   corruption 0.2, batch 64, 64 nodes/type x 3 iterations, pruned to the validation
   timestamp -- relcore's defaults) against the paper's reference code built from the
   PyPI package ``redelex==0.6.2`` (:mod:`peers.redelex_ref`: torch_sparse
   ``HGTLoader`` + its ``ResampleCorruptor`` transform, relbench encoders, its three
   contrastive losses, temperature 1.0, Adam 1e-3). One step = sample + corrupt +
   backbone on both views + loss + backward + Adam, for both.
2. **Fine-tuning** seconds/step on ``driver-dnf`` (batch 512, ResNet table model,
   lr ``--ft-lr`` for all): relcore's step (``TemporalNeighborSampler`` [128, 64]
   and [128, 128], mode B; mode P with cached frozen table encodings) against
   RelBench's example GNN (:mod:`peers.relbench_ref`) fed (a) by PyG's
   ``NeighborLoader`` [128, 64] over torch_sparse -- NON-temporal and non-disjoint,
   since temporal sampling needs pyg-lib (no wheel here): smaller batches than
   RelBench's and future rows leak in -- and (b) by relcore's temporal sampler with
   rows materialised per node, i.e. RelBench's computation on the batches pyg-lib's
   temporal loader would give. Then all of relcore-B [128, 64], (a) and (b) are
   trained to ``--ft-steps`` steps on the same seed order and their validation AUROC
   (relbench's ``task.evaluate``) is printed; (a)'s is inflated by the leakage.
3. **Profile** of relcore's pretraining step (``--profile-steps`` steps per
   backbone): wall time per phase (sampling, corruption, table models, GNN, loss,
   backward, optimiser) and torch.profiler's top operators.

Timing: interleaved rounds (each round runs ``--*-iters`` steps of every contender,
order rotated per round) after ``--warmup`` steps each; best and median round are
printed and ratios use the best (the least-disturbed round: this host is shared, e.g.
with a Ray sweep). Every contender trains its own model, so the steps are real.

The peers are never project dependencies; install them beside the venv::

    pip install --no-deps --target /tmp/benchsite ../shared/wheels/*.whl \\
        redelex==0.6.2 inflect more_itertools typeguard jaraco.functools
    PYTHONPATH=/tmp/benchsite .venv/bin/python sweeps/bench/bench_training.py

Without them the peer rows are skipped (with the import error printed).

On a shared host (load above the core count, e.g. beside a Ray sweep) run it with
``OMP_WAIT_POLICY=PASSIVE`` when ``--threads`` > 1: torch's OpenMP threads otherwise
spin-wait for descheduled peers and a step can take 10x+ longer, unevenly across
contenders (measured here: three reference pretraining steps 12.2s vs 1.3s).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import cycling, pyg_view

from relcore.corruption import MarginalPool
from relcore.data import DatasetSpec, load_dataset, load_task
from relcore.finetune import SplitTable, TaskModel, freeze_for_mode
from relcore.graph import build_graph
from relcore.loop import autocast
from relcore.losses import ContrastiveObjective
from relcore.models import BackboneConfig, GraphMeta, RDLBackbone
from relcore.corruption import corrupt_batch
from relcore.pretrain import ContrastiveStep, PretrainConfig
from relcore.sampling import HGSampler, TemporalNeighborSampler

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

LINES: list[str] = []  # everything printed, for the results file

NOTES = """
Notes:
- Pretraining peer = redelex 0.6.2's LinearRowEncoder, ResampleCorruptor ("uniform") and its
  Table/Edge/ContextContrastiveLoss, unchanged; RDLModel / PretrainingWrapper are not in the 0.6.2
  wheel and are rebuilt as the same composition (sweeps/bench/peers/redelex_ref.py); no Lightning
  loop (that would only slow the peer). Its HGTLoader runs on torch_sparse's hgt_sample.
- Fine-tuning peer (a), "RelBench model + PyG NeighborLoader": NON-temporal, non-disjoint
  (RelBench's temporal loader needs pyg-lib, which has no wheel for this torch): about half the
  nodes of a RelBench batch, and rows dated after the seed leak in, so its AUROC is not comparable.
  Peer (b), "RelBench model + temporal batches": relcore's temporal sampler with every node's row
  materialised, i.e. RelBench's computation on the batches pyg-lib would give it; this is the
  AUROC to compare with.
- driver-dnf seeds are drivers; every hop-2 edge goes from a result/standing/qualifying row to its
  one race/driver/constructor, so fan-outs [128,64] and [128,128] give identical batches here.
- P mode uses a fresh (not pretrained) frozen backbone: its speed is right, its AUROC would not be.
- Ratios are from the best of interleaved rounds; absolute figures depend on the load at the time.
"""


def out(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


# ----------------------------------------------------------------------------- timing


def interleaved(fns: dict[str, Callable[[], object]], iters: int, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per step of each round, for each contender.

    ``warmup`` steps each first; then ``repeats`` rounds, each running ``iters``
    steps of every contender, the order rotated every round, so load from other
    processes hits all contenders alike.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    rounds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            rounds[name].append((time.perf_counter() - start) / iters)
    return rounds


def best(rounds: list[float]) -> float:
    return min(rounds)


# ------------------------------------------------------------------------ pretraining


class RelcorePretrain:
    """relcore's pretraining step (the body of :func:`relcore.pretrain.pretrain`'s loop)."""

    def __init__(self, graph, table_model: str, args, max_time: int | None):
        torch.manual_seed(args.seed)
        cfg = PretrainConfig(corruption=args.corruption, batch_size=args.pt_batch, num_samples=args.pt_samples,
                             iterations=args.pt_iterations, lr=args.pt_lr, seed=args.seed)
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(args.seed)
        self.sampler = HGSampler(graph, num_samples=cfg.num_samples, iterations=cfg.iterations, max_time=max_time)
        self.pool = MarginalPool(graph, max_time=max_time)
        bcfg = BackboneConfig(table_model=table_model, layers=args.layers, aggr=args.aggr)
        self.backbone = RDLBackbone(bcfg, GraphMeta.from_graph(graph))
        self.objective = ContrastiveObjective(self.backbone.node_types, self.backbone.edge_types,
                                              bcfg.channels, n_max=cfg.n_max)
        self.model = ContrastiveStep(self.backbone, self.objective)
        self.model.train()
        # as relcore.pretrain: fused Adam (the peers keep their own code's optimiser)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, fused=True)

    def step(self) -> None:
        clean = self.sampler.sample(self.cfg.batch_size, generator=self.gen)
        corrupted = corrupt_batch(clean, self.cfg.corruption, self.pool, self.cfg.corruption_mode, self.gen)
        losses = self.model(clean, corrupted)
        self.optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        self.optimizer.step()

    def step_phases(self, timer: "PhaseTimer") -> None:
        """:meth:`step` with each phase timed (same calls, same order)."""
        with timer("1 sampling (HGSampler.sample)"):
            clean = self.sampler.sample(self.cfg.batch_size, generator=self.gen)
        with timer("2 corruption (corrupt_batch)"):
            corrupted = corrupt_batch(clean, self.cfg.corruption, self.pool, self.cfg.corruption_mode, self.gen)
        with timer("3 forward: backbone on both views"):
            h = self.backbone(clean)
            h_hat = self.backbone(corrupted)
        with timer("4 loss (ContrastiveObjective)"):
            losses = self.objective(h, h_hat, clean)
        with timer("5 backward"):
            self.optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
        with timer("6 optimizer (Adam.step)"):
            self.optimizer.step()


class RedelexPretrain:
    """The reference pretraining step (:mod:`peers.redelex_ref`)."""

    def __init__(self, graph, train_data, seed_table: str, table_model: str, args):
        from peers.redelex_ref import PretrainingWrapperRef, RDLModelRef, make_loader

        torch.manual_seed(args.seed)
        self.loader = make_loader(train_data, seed_table, args.pt_batch, args.pt_samples, args.pt_iterations,
                                  args.corruption)
        self.next = cycling(self.loader)
        self.model = PretrainingWrapperRef(
            RDLModelRef(graph.data, graph.col_stats, table_model, channels=128, layers=args.layers, aggr=args.aggr),
            channels=128, temperature=1.0)
        self.model.train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=args.pt_lr)

    def step(self) -> None:
        batch = self.next(0)
        _, losses = self.model(batch)
        loss = sum(losses.values())
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


def bench_pretrain(graph, dataset, args, peer_error: str | None) -> dict:
    max_time = int(dataset.val_timestamp.timestamp()) if getattr(dataset, "val_timestamp", None) else None
    out(f"\n## 1. Pretraining steps/s (rows <= val timestamp; batch {args.pt_batch}, {args.pt_samples} nodes/type x "
        f"{args.pt_iterations} iterations, corruption {args.corruption}, {args.layers} layers, aggr {args.aggr}, "
        f"channels 128)")
    fns, rigs = {}, {}
    train_data = None
    if peer_error is None:
        from peers.redelex_ref import upto

        train_data = upto(pyg_view(graph), max_time) if max_time is not None else pyg_view(graph)
    for tm in args.backbones:
        rigs[("relcore", tm)] = rig = RelcorePretrain(graph, tm, args, max_time)
        fns[f"relcore {tm}"] = rig.step
        if peer_error is None:
            rigs[("redelex", tm)] = peer = RedelexPretrain(graph, train_data, rig.sampler.seed_type, tm, args)
            fns[f"redelex-0.6.2 {tm}"] = peer.step
    rounds = interleaved(fns, args.pt_iters, args.repeats, args.warmup)
    out(f"\n{args.repeats} interleaved rounds x {args.pt_iters} steps (after {args.warmup} warm-up steps each)\n")
    out("| backbone | relcore steps/s (best / median) | redelex 0.6.2 steps/s (best / median) | relcore / redelex |")
    out("|---|---|---|---|")
    result = {}
    for tm in args.backbones:
        ours = rounds[f"relcore {tm}"]
        cell_ours = f"{1 / best(ours):.2f} / {1 / statistics.median(ours):.2f}"
        if peer_error is None:
            ref = rounds[f"redelex-0.6.2 {tm}"]
            ratio = best(ref) / best(ours)
            out(f"| {tm}-SAGE | {cell_ours} | {1 / best(ref):.2f} / {1 / statistics.median(ref):.2f} | "
                f"**{ratio:.2f}x** |")
            result[tm] = ratio
        else:
            out(f"| {tm}-SAGE | {cell_ours} | n/a (redelex not importable) | n/a |")
    # batch sizes, for context
    rc = rigs[("relcore", args.backbones[0])].sampler.sample(args.pt_batch, generator=123)
    sizes = sum(rc[t].num_nodes for t in rc.node_types)
    line = f"\nnodes per pretraining batch: relcore {sizes}"
    if peer_error is None:
        pb = next(iter(rigs[("redelex", args.backbones[0])].loader))
        line += f", redelex HGTLoader {sum(pb[t].num_nodes for t in pb.node_types)}"
    out(line)
    return {"rigs": rigs, "ratios": result}


# ------------------------------------------------------------------------ fine-tuning


class SeedOrder:
    """Batches of training-table indices, epoch by epoch (as :func:`relcore.finetune.finetune`)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.bs = n, batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.order, self.cursor = torch.randperm(n, generator=self.gen), 0

    def next(self) -> torch.Tensor:
        if self.cursor + self.bs > self.n:
            self.order, self.cursor = torch.randperm(self.n, generator=self.gen), 0
        idx = self.order[self.cursor: self.cursor + self.bs]
        self.cursor += self.bs
        return idx


@torch.no_grad()
def predict_temporal(sampler, entity: str, split: SplitTable, batch_size: int, forward) -> np.ndarray:
    """Sigmoid scores of ``forward`` on the split's temporal batches (fixed neighbourhoods)."""
    gen = torch.Generator().manual_seed(1)
    parts = []
    for lo in range(0, len(split.ids), batch_size):
        sl = slice(lo, lo + batch_size)
        parts.append(forward(sampler.sample(entity, split.ids[sl], split.times[sl], generator=gen)))
    return torch.sigmoid(torch.cat(parts)).numpy()


class RelcoreFinetune:
    """relcore's fine-tuning step (the body of :func:`relcore.finetune.finetune`'s loop)."""

    def __init__(self, graph, entity: str, train: SplitTable, fanouts, mode: str, args, precision: str = "fp32"):
        torch.manual_seed(args.seed)
        self.entity, self.train, self.mode, self.precision = entity, train, mode, precision
        self.gen = torch.Generator().manual_seed(args.seed)
        self.order = SeedOrder(len(train.ids), args.ft_batch, args.seed)
        backbone = RDLBackbone(BackboneConfig(table_model="resnet", layers=len(fanouts), aggr=args.aggr),
                               GraphMeta.from_graph(graph))
        self.model = TaskModel(backbone, entity)
        params = freeze_for_mode(self.model, mode)
        self.optimizer = torch.optim.Adam(params, lr=args.ft_lr, fused=True)  # as relcore.finetune
        self.row_cache, self.cache_seconds = None, 0.0
        if mode == "P":  # a fresh frozen backbone: right cost, meaningless metric
            start = time.perf_counter()
            backbone.eval()
            self.row_cache = backbone.encode_tables(graph.data)
            self.cache_seconds = time.perf_counter() - start
        self.sampler = TemporalNeighborSampler(graph, list(fanouts))
        self.steps = 0

    def _train_mode(self) -> None:  # as relcore.finetune._train_mode
        self.model.train()
        if self.mode == "P":
            self.model.backbone.eval()
            if self.model.backbone.temporal is not None:
                self.model.backbone.temporal.train()

    def step(self) -> None:
        idx = self.order.next()
        self._train_mode()
        batch = self.sampler.sample(self.entity, self.train.ids[idx], self.train.times[idx], generator=self.gen)
        with autocast(torch.device("cpu"), self.precision):
            z = self.model(batch, self.row_cache)
        loss = F.binary_cross_entropy_with_logits(z.float(), self.train.y[idx])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1

    def predict(self, split: SplitTable, batch_size: int) -> np.ndarray:
        self.model.eval()

        def forward(batch):
            with autocast(torch.device("cpu"), self.precision):
                return self.model(batch, self.row_cache).float()
        return predict_temporal(self.sampler, self.entity, split, batch_size, forward)


class RelBenchPyG:
    """RelBench's example model fed by PyG's NeighborLoader (torch_sparse, non-temporal)."""

    def __init__(self, graph, entity: str, train: SplitTable, fanouts, args):
        from peers.relbench_ref import RelBenchModel, neighbor_loader

        torch.manual_seed(args.seed)
        self.entity, self.fanouts, self.view = entity, list(fanouts), pyg_view(graph)
        self.loader = neighbor_loader(self.view, entity, train.ids, train.times, train.y, self.fanouts,
                                      args.ft_batch, shuffle=True)
        self.next = cycling(self.loader)
        self.model = RelBenchModel(graph.data, graph.col_stats, num_layers=len(fanouts), aggr=args.aggr)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=args.ft_lr)
        self.steps = 0

    def step(self) -> None:
        self.model.train()
        batch = self.next(0)
        pred = self.model(batch, self.entity).view(-1)
        loss = F.binary_cross_entropy_with_logits(pred, batch[self.entity].y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.steps += 1

    @torch.no_grad()
    def predict(self, split: SplitTable, batch_size: int) -> np.ndarray:
        from peers.relbench_ref import neighbor_loader

        self.model.eval()
        loader = neighbor_loader(self.view, self.entity, split.ids, split.times, split.y, self.fanouts,
                                 batch_size, shuffle=False)
        parts = [self.model(b, self.entity).view(-1) for b in loader]
        return torch.sigmoid(torch.cat(parts)).numpy()


class RelBenchTemporal(RelcoreFinetune):
    """RelBench's example model on relcore's temporal batches, rows materialised per
    node (what pyg-lib's temporal disjoint NeighborLoader gives RelBench)."""

    def __init__(self, graph, entity: str, train: SplitTable, fanouts, args):
        from peers.relbench_ref import RelBenchModel

        torch.manual_seed(args.seed)
        self.entity, self.train, self.mode = entity, train, "B"
        self.gen = torch.Generator().manual_seed(args.seed)
        self.order = SeedOrder(len(train.ids), args.ft_batch, args.seed)
        self.model = RelBenchModel(graph.data, graph.col_stats, num_layers=len(fanouts), aggr=args.aggr)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=args.ft_lr)
        self.sampler = TemporalNeighborSampler(graph, list(fanouts))
        self.row_cache, self.steps = None, 0

    def _forward(self, batch) -> torch.Tensor:
        from peers.relbench_ref import expand_relcore_batch

        return self.model(expand_relcore_batch(batch, self.entity), self.entity).view(-1)

    def step(self) -> None:
        idx = self.order.next()
        self.model.train()
        batch = self.sampler.sample(self.entity, self.train.ids[idx], self.train.times[idx], generator=self.gen)
        loss = F.binary_cross_entropy_with_logits(self._forward(batch), self.train.y[idx])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.steps += 1

    def predict(self, split: SplitTable, batch_size: int) -> np.ndarray:
        self.model.eval()
        return predict_temporal(self.sampler, self.entity, split, batch_size, self._forward)


def bench_finetune(graph, spec, dataset, args, peer_error: str | None) -> None:
    task = load_task(spec, dataset, args.task)
    entity = task.entity_table
    train, val = SplitTable.of(task, "train"), SplitTable.of(task, "val")
    out(f"\n## 2. Fine-tuning seconds/step ({args.task}: {len(train.ids):,} train / {len(val.ids):,} val rows; "
        f"batch {args.ft_batch}, ResNet table model, {args.aggr}, Adam lr {args.ft_lr})")
    lo, hi = [128, 64], [128, 128]
    rigs: dict[str, object] = {
        "relcore B [128,64]": RelcoreFinetune(graph, entity, train, lo, "B", args),
        "relcore B [128,128]": RelcoreFinetune(graph, entity, train, hi, "B", args),
        "relcore B [128,64] bf16 autocast": RelcoreFinetune(graph, entity, train, lo, "B", args, "bf16"),
        "relcore P [128,64] (cached frozen rows)": RelcoreFinetune(graph, entity, train, lo, "P", args),
    }
    peer_ok = peer_error is None
    if peer_ok:
        rigs["RelBench model + PyG NeighborLoader [128,64] (non-temporal)"] = RelBenchPyG(
            graph, entity, train, lo, args)
        rigs["RelBench model + temporal batches [128,64] (rows per node)"] = RelBenchTemporal(
            graph, entity, train, lo, args)
    rounds = interleaved({k: r.step for k, r in rigs.items()}, args.ft_iters, args.repeats, args.warmup)
    out(f"\n{args.repeats} interleaved rounds x {args.ft_iters} steps (after {args.warmup} warm-up steps each); "
        f"P's one-off table encoding: {rigs['relcore P [128,64] (cached frozen rows)'].cache_seconds:.1f}s\n")
    base = best(rounds["RelBench model + PyG NeighborLoader [128,64] (non-temporal)"]) if peer_ok else None
    base_t = best(rounds["RelBench model + temporal batches [128,64] (rows per node)"]) if peer_ok else None
    out("| step | nodes/batch | s/step (best / median) | speed-up vs RelBench+PyG | speed-up vs RelBench temporal |")
    out("|---|---|---|---|---|")
    sizes = _batch_sizes(rigs, train)
    for name, r in rounds.items():
        b = best(r)
        vs = f"{base / b:.2f}x" if base else "n/a"
        vs_t = f"{base_t / b:.2f}x" if base_t else "n/a"
        out(f"| {name} | {sizes[name]} | {b:.3f} / {statistics.median(r):.3f} | {vs} | {vs_t} |")
    if not peer_ok:
        out(f"\n(peers skipped: {peer_error})")

    # Validation AUROC after the same number of steps, same lr, same seed order.
    contenders = ["relcore B [128,64]", "relcore B [128,64] bf16 autocast"]
    if peer_ok:
        contenders += ["RelBench model + temporal batches [128,64] (rows per node)",
                       "RelBench model + PyG NeighborLoader [128,64] (non-temporal)"]
    start = time.perf_counter()
    aurocs = {}
    for name in contenders:
        rig = rigs[name]
        while rig.steps < args.ft_steps:
            rig.step()
        aurocs[name] = (rig.steps, task.evaluate(rig.predict(val, args.ft_batch), val.table)["roc_auc"])
    out(f"\nValidation AUROC ({args.task}) after {args.ft_steps} steps, lr {args.ft_lr}, batch {args.ft_batch} "
        f"({time.perf_counter() - start:.0f}s):\n")
    out("| model | steps | val AUROC |")
    out("|---|---|---|")
    for name, (steps, auc) in aurocs.items():
        note = " (non-temporal: future rows leak; not comparable)" if "non-temporal" in name else ""
        out(f"| {name}{note} | {steps} | {auc:.4f} |")


def _batch_sizes(rigs: dict, train: SplitTable) -> dict[str, str]:
    """Nodes in one batch of each contender (relcore: nodes, and distinct rows encoded)."""
    sizes = {}
    idx = SeedOrder(len(train.ids), 512, 7).next()
    for name, rig in rigs.items():
        if isinstance(rig, RelBenchPyG):
            b = next(iter(rig.loader))
            sizes[name] = f"{sum(b[t].num_nodes for t in b.node_types):,}"
        else:
            b = rig.sampler.sample(rig.entity, train.ids[idx], train.times[idx], generator=7)
            nodes = sum(b[t].num_nodes for t in b.node_types)
            rows = sum(len(b[t].tf) for t in b.node_types)
            sizes[name] = f"{nodes:,}" if isinstance(rig, RelBenchTemporal) else f"{nodes:,} ({rows:,} distinct rows)"
    return sizes


# ---------------------------------------------------------------------------- profile


class PhaseTimer:
    """Accumulated wall time per named phase; module hooks add nested sub-phases."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._starts: dict[int, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] += time.perf_counter() - self.t

        return _Ctx()

    def hook(self, module: torch.nn.Module, name: str) -> list:
        def pre(mod, inputs):
            self._starts[id(mod)] = time.perf_counter()

        def post(mod, inputs, output):
            self.seconds[name] += time.perf_counter() - self._starts.pop(id(mod))

        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]


def profile_pretrain(graph, dataset, args, rigs: dict | None) -> None:
    max_time = int(dataset.val_timestamp.timestamp()) if getattr(dataset, "val_timestamp", None) else None
    n = args.profile_steps
    out(f"\n## 3. Where relcore's pretraining step spends its time ({n} steps per backbone, "
        f"{torch.get_num_threads()} threads)")
    for tm in args.backbones:
        rig = (rigs or {}).get(("relcore", tm)) or RelcorePretrain(graph, tm, args, max_time)
        rig.step_phases(PhaseTimer())  # warm-up
        timer = PhaseTimer()
        handles = timer.hook(rig.backbone.gnn, "3b   of which GNN (HeteroSAGE)")
        for m in rig.backbone.table_models.values():
            handles += timer.hook(m, "3a   of which table models")
        total_start = time.perf_counter()
        for _ in range(n):
            rig.step_phases(timer)
        total = time.perf_counter() - total_start
        for h in handles:
            h.remove()
        out(f"\n### {tm}-SAGE: {1e3 * total / n:.1f} ms/step ({n / total:.2f} steps/s)\n")
        out("| phase | ms/step | share |")
        out("|---|---|---|")
        for name in sorted(timer.seconds):
            s = timer.seconds[name]
            out(f"| {name[2:]} | {1e3 * s / n:.1f} | {100 * s / total:.0f}% |")

        # operator view (torch.profiler) and Python view (cProfile) of the same step
        from torch.profiler import ProfilerActivity, profile

        k = max(n // 3, 5)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(k):
                rig.step()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows)
        out(f"\ntorch.profiler, {k} steps, top {args.profile_rows} operators by self CPU time:\n")
        out("```")
        for line in table.rstrip().splitlines():
            out(line)
        out("```")
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(k):
            rig.step()
        pr.disable()
        buf = io.StringIO()
        stats = pstats.Stats(pr, stream=buf).sort_stats("tottime")
        stats.print_stats(args.profile_rows)
        out(f"\ncProfile, {k} steps, top {args.profile_rows} functions by own time:\n")
        out("```")
        keep = False
        for line in buf.getvalue().splitlines():
            keep = keep or line.lstrip().startswith("ncalls")
            if keep and line.strip():
                out(line.replace(str(REPO) + "/", "").replace(sys.prefix + "/lib/python3.11/site-packages/", ""))
        out("```")


# ------------------------------------------------------------------------------- main


def peer_import_error() -> str | None:
    """None when the peers import, else the exact import error."""
    try:
        import torch_sparse  # noqa: F401
        from torch_geometric.loader import HGTLoader  # noqa: F401

        import peers.redelex_ref  # noqa: F401
        import peers.relbench_ref  # noqa: F401
    except Exception as exc:  # report, don't fake
        return f"{type(exc).__name__}: {exc}"
    return None


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"python {platform.python_version()}"]
    for dist in ("torch", "torch_geometric", "pytorch_frame", "relbench", "torch_sparse", "torch_scatter", "redelex"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} absent")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw-dir", default=str(REPO.parent / "shared" / "data" / "ergast-f1"))
    parser.add_argument("--cache-root", default=None, help="graph cache (default $RELCORE_CACHE_DIR)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["pretrain", "finetune", "profile"], action="append",
                        help="run only these sections (repeatable)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per contender before the rounds")
    # pretraining
    parser.add_argument("--backbones", default="linear,resnet")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--aggr", default="sum")
    parser.add_argument("--corruption", type=float, default=0.2)
    parser.add_argument("--pt-batch", type=int, default=64)
    parser.add_argument("--pt-samples", type=int, default=64)
    parser.add_argument("--pt-iterations", type=int, default=3)
    parser.add_argument("--pt-lr", type=float, default=1e-3)
    parser.add_argument("--pt-iters", type=int, default=10, help="pretraining steps per round")
    # fine-tuning
    parser.add_argument("--task", default="driver-dnf")
    parser.add_argument("--ft-batch", type=int, default=512)
    parser.add_argument("--ft-lr", type=float, default=1e-3)
    parser.add_argument("--ft-iters", type=int, default=2, help="fine-tuning steps per round")
    parser.add_argument("--ft-steps", type=int, default=30, help="training steps before the validation AUROC")
    # profile
    parser.add_argument("--profile-steps", type=int, default=30)
    parser.add_argument("--profile-rows", type=int, default=12)
    parser.add_argument("--out", default=str(HERE / "results" / "speed-training.md"))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    args = parser.parse_args(argv)
    args.backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    sections = set(args.only or ["pretrain", "finetune", "profile"])
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_before = os.getloadavg()

    out("# relcore training speed vs peers (rel-f1)")
    out(f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores; torch threads "
        f"{torch.get_num_threads()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
        f"load average at start {load_before[0]:.2f} (host shared: every figure below is a ratio or a "
        f"best round of interleaved rounds)")
    out(versions())
    if args.threads > 1 and "OMP_WAIT_POLICY" not in os.environ and load_before[0] > (os.cpu_count() or 1):
        out(f"\nWARNING: {args.threads} threads on a host with load {load_before[0]:.1f} > {os.cpu_count()} cores and "
            f"OMP_WAIT_POLICY unset: torch's OpenMP threads spin-wait on descheduled peers and steps can run "
            f"10x+ slower, unevenly across contenders. Rerun with OMP_WAIT_POLICY=PASSIVE (or --threads 1).")
    peer_error = peer_import_error()
    if peer_error:
        out(f"\npeers NOT importable, their rows are skipped: {peer_error}")

    spec = DatasetSpec("rel-f1", raw_dir=args.raw_dir)
    dataset = load_dataset(spec)
    t0 = time.perf_counter()
    graph = build_graph(dataset.get_db(), cache_root=args.cache_root)
    print(f"graph built/loaded in {time.perf_counter() - t0:.1f}s", flush=True)

    pre = None
    if "pretrain" in sections:
        pre = bench_pretrain(graph, dataset, args, peer_error)
    if "finetune" in sections:
        bench_finetune(graph, spec, dataset, args, peer_error)
    if "profile" in sections:
        profile_pretrain(graph, dataset, args, pre["rigs"] if pre else None)

    load_after = os.getloadavg()
    out(f"\nTotal {time.perf_counter() - t_start:.0f}s; load average at end {load_after[0]:.2f}.")
    out(NOTES)
    if not args.no_write:
        env = [f"{k}={os.environ[k]}" for k in ("PYTHONPATH", "OMP_WAIT_POLICY") if os.environ.get(k)]
        cmd = " ".join(env + [".venv/bin/python", "sweeps/bench/bench_training.py",
                              *(argv if argv is not None else sys.argv[1:])])
        text = "\n".join(LINES[:1] + ["", "Command (from the repository root):", "", "```", cmd, "```"] + LINES[1:])
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        if args.append and path.exists():
            text = path.read_text() + "\n---\n\n" + text.replace("# ", "# (run 2) ", 1)
        path.write_text(text + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
