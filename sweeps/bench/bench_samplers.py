"""Throughput of relcore's samplers, and of PyG's compiled ones when available.

Measures subgraphs/s, TensorFrame slicing included, for

* ``HGSampler``: ``--hg-samples`` nodes per type x ``--hg-iterations`` rounds,
  ``--hg-batch`` seeds of the default seed table (one subgraph per call);
* ``TemporalNeighborSampler``: seeds and times from a relbench task's train table
  (rel-f1: ``driver-dnf``), ``--temporal-batch`` seeds per call, fan-outs
  ``[128, 128]`` and ``[128, 64]``;

and, when ``torch_sparse`` is importable, PyG's ``HGTLoader`` and
``NeighborLoader`` on the same HeteroData and budgets. PyG's temporal / disjoint
sampling needs pyg-lib, so its NeighborLoader runs NON-temporal and non-disjoint
(less work than ours: no time filter, no per-seed copies). Each PyG sampler is
timed twice: the whole loader (sampling + its feature filtering, TensorFrames
included, i.e. what ours returns) and the bare compiled sampler call.

torch_sparse is never a project dependency; to include PyG::

    pip install --no-deps --target /tmp/benchsite ../shared/wheels/*.whl
    PYTHONPATH=/tmp/benchsite .venv/bin/python sweeps/bench/bench_samplers.py

Timing: best of ``--repeats`` rounds of ``--iters`` calls (this host is shared, so
the best round is the least disturbed one), torch threads ``--threads`` (default
1, as inside DataLoader workers).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common import cycling, pyg_view

from relcore.data import DatasetSpec, entity_task_names, load_dataset, load_task
from relcore.graph import RelGraph, build_graph
from relcore.sampling import HGSampler, TemporalNeighborSampler, build_csr

REPO = Path(__file__).resolve().parents[2]


def best_rates(fns: dict[str, Callable[[int], object]], iters: int, repeats: int) -> dict[str, float]:
    """Calls per second of each function: best of ``repeats`` rounds of ``iters`` calls.

    Rounds are interleaved across the functions (after one warm-up call each), so a
    burst of load from other processes on this shared host hits all of them alike.
    """
    best = dict.fromkeys(fns, float("inf"))
    for fn in fns.values():
        fn(0)
    for r in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for i in range(iters):
                fn(r * iters + i + 1)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: iters / t for name, t in best.items()}


def load_graph(args) -> tuple[RelGraph, object, DatasetSpec]:
    spec = DatasetSpec(args.dataset, raw_dir=args.raw_dir if args.dataset in ("rel-f1", "f1") else None)
    try:
        dataset = load_dataset(spec)
    except ImportError as exc:  # e.g. relcore.data.synthetic not written yet
        raise SystemExit(f"dataset {args.dataset} not available: {exc}")
    t0 = time.perf_counter()
    graph = build_graph(dataset.get_db(), cache_root=args.cache_root)
    print(f"graph built/loaded in {time.perf_counter() - t0:.1f}s")
    return graph, dataset, spec


def temporal_seeds(spec: DatasetSpec, dataset, task_name: str | None) -> tuple[str, np.ndarray, np.ndarray, str]:
    """Seed table, ids and unix-second times from a task's train table."""
    if task_name is None:
        task_name = "driver-dnf" if spec.registry_name == "rel-f1" else entity_task_names(spec)[0]
    task = load_task(spec, dataset, task_name)
    df = task.get_table("train").df
    ids = df[task.entity_col].to_numpy(np.int64)
    times = pd.to_datetime(df[task.time_col]).to_numpy().astype("datetime64[s]").astype(np.int64)
    return task.entity_table, ids, times, task_name


def report(name: str, rate: float, per_call: int = 1, unit: str = "subgraphs/s") -> None:
    extra = f" = {rate * per_call:,.0f} seed-subgraphs/s" if per_call > 1 else ""
    print(f"  {name:<58s} {rate:9.1f} {unit} ({1e3 / rate:7.2f} ms/call){extra}")


def bench_hg(graph: RelGraph, args, with_pyg: bool) -> None:
    print(f"\nHGSampling: {args.hg_samples}/type x {args.hg_iterations} iterations, batch {args.hg_batch}, "
          f"TensorFrame slicing included")
    sampler = HGSampler(graph, num_samples=args.hg_samples, iterations=args.hg_iterations)
    fns = {f"ours HGSampler (seed type {sampler.seed_type})": lambda i: sampler.sample(args.hg_batch, generator=i)}
    if args.hg_max_time is not None:
        pruned = HGSampler(graph, num_samples=args.hg_samples, iterations=args.hg_iterations,
                           max_time=args.hg_max_time)
        fns[f"ours HGSampler, max_time={args.hg_max_time}"] = lambda i: pruned.sample(args.hg_batch, generator=i)
    if with_pyg:
        from torch_geometric.loader import HGTLoader
        from torch_geometric.sampler import NodeSamplerInput

        loader = HGTLoader(pyg_view(graph), input_nodes=(sampler.seed_type, None), batch_size=args.hg_batch,
                           num_samples={t: [args.hg_samples] * args.hg_iterations for t in graph.node_types},
                           shuffle=True)
        n = graph.num_nodes(sampler.seed_type)
        fns["PyG HGTLoader (torch_sparse hgt_sample + filter, tf incl.)"] = cycling(loader)
        fns["PyG hgt_sample alone (no features)"] = lambda i: loader.node_sampler.sample_from_nodes(
            NodeSamplerInput(input_id=None, node=torch.randperm(n)[:args.hg_batch], input_type=sampler.seed_type))
    rates = best_rates(fns, args.iters, args.repeats)
    for name, rate in rates.items():
        report(name, rate)
    if with_pyg:
        ours, full, bare = rates[next(iter(fns))], *list(rates.values())[-2:]
        print(f"  ratio ours/PyG: {ours / full:.2f}x vs HGTLoader, {ours / bare:.2f}x vs bare hgt_sample")


def bench_temporal(graph: RelGraph, spec, dataset, args, with_pyg: bool) -> None:
    seed_type, ids, times, task_name = temporal_seeds(spec, dataset, args.task)
    bs = args.temporal_batch
    order = np.random.default_rng(0).permutation(len(ids))
    num_batches = max(len(ids) // bs, 1)

    def batch_of(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = order[(i % num_batches) * bs:(i % num_batches) * bs + bs]
        return torch.from_numpy(ids[idx]), torch.from_numpy(times[idx])

    print(f"\nTemporal neighbour sampling: seeds = {task_name} train table ({len(ids):,} {seed_type} rows), "
          f"batch {bs}, TensorFrame slicing included")
    for fanouts in ([128, 128], [128, 64]):
        sampler = TemporalNeighborSampler(graph, fanouts)
        size = sum(sampler.sample(seed_type, *batch_of(0), generator=0)[t].num_nodes for t in graph.node_types)
        fns = {f"ours temporal {fanouts} (disjoint, ~{size:,} nodes/batch)":
               lambda i, s=sampler: s.sample(seed_type, *batch_of(i), generator=i)}
        if with_pyg:
            from torch_geometric.loader import NeighborLoader
            from torch_geometric.sampler import NodeSamplerInput

            loader = NeighborLoader(pyg_view(graph), num_neighbors=fanouts, batch_size=bs, shuffle=True,
                                    input_nodes=(seed_type, torch.from_numpy(ids)))
            pyg_size = sum(next(iter(loader))[t].num_nodes for t in graph.node_types)
            fns[f"PyG NeighborLoader {fanouts} NON-temporal (~{pyg_size:,} nodes)"] = cycling(loader)
            fns["PyG hetero_neighbor_sample alone (no features)"] = (
                lambda i, ld=loader: ld.node_sampler.sample_from_nodes(
                    NodeSamplerInput(input_id=None, node=batch_of(i)[0], input_type=seed_type)))
        rates = best_rates(fns, args.iters, args.repeats)
        for name, rate in rates.items():
            report(name, rate, bs, "batches/s")
        if with_pyg:
            ours, full, bare = rates[next(iter(fns))], *list(rates.values())[-2:]
            print(f"  ratio ours/PyG: {ours / full:.2f}x vs NeighborLoader, {ours / bare:.2f}x vs bare sampler "
                  f"(PyG's runs non-temporal, non-disjoint: temporal needs pyg-lib)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="rel-f1", help="rel-f1 or synthetic:N (e.g. synthetic:1m)")
    parser.add_argument("--raw-dir", default=str(REPO.parent / "shared" / "data" / "ergast-f1"))
    parser.add_argument("--cache-root", default=None, help="graph cache (default $RELCORE_CACHE_DIR)")
    parser.add_argument("--task", default=None, help="entity task for temporal seeds")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hg-samples", type=int, default=64)
    parser.add_argument("--hg-iterations", type=int, default=3)
    parser.add_argument("--hg-batch", type=int, default=64)
    parser.add_argument("--hg-max-time", type=int, default=None,
                        help="also time HGSampler pruned to this unix time (default: the val timestamp)")
    parser.add_argument("--temporal-batch", type=int, default=512)
    parser.add_argument("--no-pyg", action="store_true")
    parser.add_argument("--only", choices=["hg", "temporal"], default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    try:
        import torch_sparse  # noqa: F401
        with_pyg = not args.no_pyg
    except ImportError:
        with_pyg = False
        print("torch_sparse not importable: PyG samplers skipped (see this script's docstring)")

    graph, dataset, spec = load_graph(args)
    if args.hg_max_time is None and getattr(dataset, "val_timestamp", None) is not None:
        args.hg_max_time = int(pd.Timestamp(dataset.val_timestamp).value // 10**9)
    t0 = time.perf_counter()
    build_csr(graph)
    rows = sum(graph.num_nodes(t) for t in graph.node_types)
    edges = sum(graph.data[et].num_edges for et in graph.edge_types)
    print(f"{args.dataset}: {len(graph.node_types)} node types, {len(graph.edge_types)} edge types, "
          f"{rows:,} rows, {edges:,} edges; CSR built in {time.perf_counter() - t0:.2f}s; "
          f"torch threads {torch.get_num_threads()}; best of {args.repeats} x {args.iters} calls")
    if args.only in (None, "hg"):
        bench_hg(graph, args, with_pyg)
    if args.only in (None, "temporal"):
        bench_temporal(graph, spec, dataset, args, with_pyg)


if __name__ == "__main__":
    main()
