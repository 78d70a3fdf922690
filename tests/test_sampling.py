"""Samplers: CSR index, HGSampling and temporal neighbour sampling.

Exact answers on tiny hand-made graphs, invariants (time, budgets, real and
complete edges, fan-outs) on the real rel-f1 graph.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from torch_frame import TensorFrame, stype
from torch_geometric.data import HeteroData

from relcore.graph import RelGraph
from relcore.sampling import HGSampler, TemporalNeighborSampler, build_csr, default_seed_type
from relcore.sampling.csr import csr_from_edges
from relcore.sampling.ops import segment_sample, weighted_sample

# ----------------------------------------------------------------- helpers


def tiny_graph(tables: dict[str, tuple[int, list[int] | None]],
               fkeys: list[tuple[str, str, str, list[int]]]) -> RelGraph:
    """A RelGraph by hand: ``tables[name] = (rows, times or None)``;
    ``fkeys = [(child, col, parent, parent row of each child row)]``. Feature ``x`` of
    row i is i, so TensorFrame slicing is checkable."""
    data = HeteroData()
    schema = {}
    for name, (rows, times) in tables.items():
        data[name].tf = TensorFrame(feat_dict={stype.numerical: torch.arange(rows, dtype=torch.float).view(-1, 1)},
                                    col_names_dict={stype.numerical: ["x"]})
        if times is not None:
            data[name].time = torch.tensor(times, dtype=torch.long)
        schema[name] = {"pkey": "id", "time_col": "t" if times is not None else None, "fkeys": {}, "rows": rows}
    for child, col, parent, targets in fkeys:
        src = torch.arange(len(targets))
        dst = torch.tensor(targets)
        data[(child, f"f2p_{col}", parent)].edge_index = torch.stack([src, dst])
        data[(parent, f"rev_f2p_{col}", child)].edge_index = torch.stack([dst, src])
        schema[child]["fkeys"][col] = parent
    return RelGraph(data=data, col_stats={}, schema=schema, stypes={}, key="tiny")


def global_edges(batch: HeteroData, et) -> list[tuple[int, int]]:
    src_t, _, dst_t = et
    ei = batch[et].edge_index
    return list(zip(batch[src_t].n_id[ei[0]].tolist(), batch[dst_t].n_id[ei[1]].tolist()))


def graph_edges(graph: RelGraph, et) -> Counter:
    ei = graph.data[et].edge_index
    return Counter(zip(ei[0].tolist(), ei[1].tolist()))


def assert_contract(batch: HeteroData, graph: RelGraph, seed_type: str) -> None:
    """Every node and edge type present, local edge indices in range, tf = graph rows."""
    assert batch.seed_type == seed_type
    assert set(batch.node_types) == set(graph.data.node_types)
    assert set(batch.edge_types) == set(graph.data.edge_types)
    for t in graph.data.node_types:
        n_id = batch[t].n_id
        assert n_id.dtype == torch.long and batch[t].num_nodes == len(n_id)
        tf = batch[t].tf
        if "row_index" in batch[t]:  # distinct rows once, nodes map to them
            assert len(tf) == len(torch.unique(n_id))
            tf = tf[batch[t].row_index]
        assert len(tf) == len(n_id)
        for st, feat in tf.feat_dict.items():
            ref = graph.data[t].tf[n_id].feat_dict[st]
            if isinstance(ref, torch.Tensor):
                same(feat, ref)
            else:  # MultiEmbeddingTensor / MultiNestedTensor
                same(feat.values, ref.values)
                same(feat.offset, ref.offset)
        if "time" in graph.data[t]:
            assert torch.equal(batch[t].time, graph.data[t].time[n_id])
    for et in graph.data.edge_types:
        ei = batch[et].edge_index
        assert ei.dtype == torch.long and ei.dim() == 2 and ei.size(0) == 2
        if ei.numel():
            assert ei[0].max() < batch[et[0]].num_nodes and ei[1].max() < batch[et[2]].num_nodes
            assert ei.min() >= 0


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def unix(ts) -> int:
    return int(pd.Timestamp(ts).value // 10**9)


@pytest.fixture(scope="module")
def shop() -> RelGraph:
    """countries <- users <- events -> items; events timed (t = 10 * id)."""
    n_events = 1000
    ev = np.arange(n_events)
    return tiny_graph(
        {"countries": (5, None), "users": (50, None), "items": (40, None),
         "events": (n_events, (10 * ev).tolist())},
        [("events", "user", "users", (ev % 50).tolist()),
         ("events", "item", "items", (ev % 40).tolist()),
         ("users", "country", "countries", (np.arange(50) % 5).tolist())],
    )


@pytest.fixture(scope="module")
def forum() -> RelGraph:
    """Two users share topic 0; posts dated 10, 50, 20, 90."""
    return tiny_graph(
        {"users": (2, None), "topics": (2, None), "posts": (4, [10, 50, 20, 90])},
        [("posts", "author", "users", [0, 1, 0, 1]),
         ("posts", "topic", "topics", [0, 0, 0, 1])],
    )


# ---------------------------------------------------------------- kernels


def test_segment_sample_distinct_in_range_and_uniform():
    counts = np.array([0, 3, 5, 8, 10, 300, 5000])
    k, reps = 5, 4000
    rng = np.random.default_rng(0)
    seg, off = segment_sample(np.tile(counts, reps), k, rng)
    row = seg % len(counts)
    assert (off >= 0).all() and (off < counts[row]).all()
    assert len(set(zip(seg.tolist(), off.tolist()))) == len(seg)  # without replacement
    assert (np.bincount(seg, minlength=len(counts) * reps) == np.tile(np.minimum(counts, k), reps)).all()
    for r, n in enumerate(counts):
        if n <= k:
            continue
        # Each position is included with probability k / n: check it on <= 10 equal buckets.
        buckets = min(n, 10)
        got = np.bincount(off[row == r] * buckets // n, minlength=buckets) / (k * reps)
        share = np.bincount(np.arange(n) * buckets // n, minlength=buckets) / n
        assert np.abs(got - share).max() < 5 * np.sqrt(share.max() / (k * reps)), (n, got, share)


def test_weighted_sample_without_replacement_prefers_heavy():
    rng = np.random.default_rng(0)
    w = np.array([0.0, 1.0, 1.0, 100.0, 0.0])
    hits = Counter()
    for _ in range(500):
        pick = weighted_sample(w, 2, rng)
        assert len(set(pick.tolist())) == 2 and set(pick.tolist()) <= {1, 2, 3}
        hits.update(pick.tolist())
    assert hits[3] > 490
    assert set(weighted_sample(w, 10, rng).tolist()) == {1, 2, 3}


def test_csr_time_sorted_and_count_upto_matches_brute_force():
    rng = np.random.default_rng(1)
    src, dst = rng.integers(0, 30, 500), rng.integers(0, 20, 500)
    src_time = rng.integers(-1000, 1000, 30)
    csr = csr_from_edges(src, dst, 30, 20, src_time)
    for v in range(20):
        row = slice(csr.rowptr[v], csr.rowptr[v + 1])
        assert sorted(csr.col[row].tolist()) == sorted(src[dst == v].tolist())
        assert (np.diff(csr.col_time[row]) >= 0).all()
    rows = rng.integers(0, 20, 300)
    times = rng.integers(-1200, 1200, 300)
    expect = [(src_time[src[dst == v]] <= t).sum() for v, t in zip(rows, times)]
    assert csr.count_upto(rows, times).tolist() == expect
    csr._keys = None  # the overflow fallback: vectorised bisection
    assert csr.count_upto(rows, times).tolist() == expect


def test_build_csr_cached_on_graph(f1_graph):
    first = build_csr(f1_graph)
    assert build_csr(f1_graph) is first
    assert set(first) == set(f1_graph.edge_types)


# ------------------------------------------------------------------- HGT


def test_hg_budget_counts_exact_and_induced_edges_complete(shop):
    # Seeds are events 0..15, whose users and items are 16 distinct rows per type.
    # Round 1 can only reach those (8 each); sampled users / items feed only events and
    # countries, so round 2 takes the 8 left of each plus 8 events (each sampled user
    # or item has >= 20 events); countries come from round-1 users only.
    sampler = HGSampler(shop, num_samples=8, iterations=2)
    assert sampler.seed_type == "events"  # two foreign keys
    batch = sampler.sample(seed_ids=torch.arange(16), generator=0)
    assert_contract(batch, shop, "events")
    counts = {t: batch[t].num_nodes for t in batch.node_types}
    assert counts == {"events": 16 + 8, "users": 16, "items": 16, "countries": counts["countries"]}
    round1_users = set(batch["users"].n_id[:8].tolist())
    assert counts["countries"] == len({u % 5 for u in round1_users})
    assert set(batch["users"].n_id.tolist()) == set(range(16))
    assert torch.equal(batch["events"].tf.feat_dict[stype.numerical].view(-1).long(), batch["events"].n_id)
    assert batch["events"].n_id[:16].tolist() == list(range(16)) and batch["events"].batch_size == 16
    for t in batch.node_types:
        assert len(set(batch[t].n_id.tolist())) == batch[t].num_nodes
    for et in shop.edge_types:
        src_ids, dst_ids = set(batch[et[0]].n_id.tolist()), set(batch[et[2]].n_id.tolist())
        induced = Counter({e: c for e, c in graph_edges(shop, et).items()
                           if e[0] in src_ids and e[1] in dst_ids})
        assert Counter(global_edges(batch, et)) == induced, et


def test_hg_takes_whole_budget_when_small(shop):
    batch = HGSampler(shop, num_samples=100, iterations=1).sample(seed_ids=torch.arange(16), generator=1)
    assert {t: batch[t].num_nodes for t in batch.node_types} == {
        "events": 16, "users": 16, "items": 16, "countries": 0}


def test_hg_max_time_on_tiny_graph(shop):
    sampler = HGSampler(shop, num_samples=8, iterations=3, max_time=995)
    for seed in range(5):
        batch = sampler.sample(batch_size=16, generator=seed)
        assert (batch["events"].time <= 995).all()
        assert (batch["events"].n_id <= 99).all()
    with pytest.raises(ValueError):
        sampler.sample(seed_ids=torch.tensor([500]))


def test_hg_on_f1_bounds_real_edges_and_time(f1_graph, f1_dataset):
    max_time = unix(f1_dataset.val_timestamp)  # 2005-01-01
    assert max_time == unix("2005-01-01")
    assert default_seed_type(f1_graph) == "results"
    sampler = HGSampler(f1_graph, num_samples=64, iterations=3, max_time=max_time)
    for seed in range(4):
        batch = sampler.sample(batch_size=64, generator=seed)
        assert_contract(batch, f1_graph, "results")
        for t in batch.node_types:
            assert batch[t].num_nodes <= (64 if t == "results" else 0) + 3 * 64
            if "time" in batch[t]:
                assert (batch[t].time <= max_time).all(), t
        for et in f1_graph.edge_types:
            real = graph_edges(f1_graph, et)
            got = global_edges(batch, et)
            assert all(e in real for e in got), et
            src_ids, dst_ids = set(batch[et[0]].n_id.tolist()), set(batch[et[2]].n_id.tolist())
            assert len(got) == sum(c for e, c in real.items() if e[0] in src_ids and e[1] in dst_ids)
    assert batch["results"].batch_size == 64
    assert sum(batch[t].num_nodes for t in batch.node_types) > 64 * 5


def test_hg_reproducible_and_seed_dependent(f1_graph):
    sampler = HGSampler(f1_graph)
    a, b, c = (sampler.sample(64, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8))
    for t in a.node_types:
        assert torch.equal(a[t].n_id, b[t].n_id)
    for et in a.edge_types:
        assert torch.equal(a[et].edge_index, b[et].edge_index)
    assert not torch.equal(a["results"].n_id, c["results"].n_id)
    torch.manual_seed(3)
    d = sampler.sample(64)
    torch.manual_seed(3)
    assert torch.equal(d["races"].n_id, sampler.sample(64)["races"].n_id)


# -------------------------------------------------------------- temporal


def per_seed(batch: HeteroData, node_type: str, seed: int) -> set[int]:
    return set(batch[node_type].n_id[batch[node_type].batch == seed].tolist())


def test_temporal_shared_neighbour_exact(forum):
    sampler = TemporalNeighborSampler(forum, fanouts=10, num_layers=3)
    batch = sampler.sample("users", torch.tensor([0, 1]), torch.tensor([15, 100]), generator=0)
    assert_contract(batch, forum, "users")
    # Seed 0 (t=15) and seed 1 (t=100) share topic 0, but posts 1 (t=50) and 2 (t=20)
    # must not reach seed 0's subgraph through it.
    assert per_seed(batch, "posts", 0) == {0}
    assert per_seed(batch, "topics", 0) == {0}
    assert per_seed(batch, "users", 0) == {0}
    assert per_seed(batch, "posts", 1) == {0, 1, 2, 3}
    assert per_seed(batch, "topics", 1) == {0, 1}
    assert per_seed(batch, "users", 1) == {1}
    for t in batch.node_types:
        assert torch.equal(batch[t].seed_time, torch.tensor([15, 100])[batch[t].batch])
    assert (batch["posts"].time <= batch["posts"].seed_time).all()
    # Every allowed neighbour is taken (fan-out 10 > degree): the exact edge sets.
    et = ("posts", "f2p_topic", "topics")
    ei = batch[et].edge_index
    edges = {(int(batch["posts"].batch[s]), int(batch["posts"].n_id[s]), int(batch["topics"].n_id[d]))
             for s, d in ei.t().tolist()}
    assert edges == {(0, 0, 0), (1, 0, 0), (1, 1, 0), (1, 2, 0), (1, 3, 1)}


def test_temporal_same_row_two_seed_times(forum):
    sampler = TemporalNeighborSampler(forum, [5])
    batch = sampler.sample("users", torch.tensor([0, 0]), torch.tensor([15, 25]), generator=0)
    assert batch["users"].n_id.tolist() == [0, 0] and batch["users"].batch_size == 2
    assert per_seed(batch, "posts", 0) == {0} and per_seed(batch, "posts", 1) == {0, 2}


@pytest.fixture(scope="module")
def driver_batch(f1_graph):
    """512 drivers at timestamps spread over 1950-2010, fan-outs [5, 2]."""
    gen = torch.Generator().manual_seed(0)
    seeds = torch.randint(0, f1_graph.num_nodes("drivers"), (512,), generator=gen)
    times = torch.randint(unix("1950-01-01"), unix("2010-01-01"), (512,), generator=gen)
    batch = TemporalNeighborSampler(f1_graph, [5, 2]).sample("drivers", seeds, times, generator=gen)
    return seeds, times, batch


def test_temporal_f1_no_future_rows_and_disjoint(f1_graph, driver_batch):
    seeds, times, batch = driver_batch
    assert_contract(batch, f1_graph, "drivers")
    assert batch["drivers"].batch_size == 512
    assert torch.equal(batch["drivers"].n_id[:512], seeds)
    assert torch.equal(batch["drivers"].batch[:512], torch.arange(512))
    total_timed = 0
    for t in batch.node_types:
        assert torch.equal(batch[t].seed_time, times[batch[t].batch])
        if "time" in batch[t]:
            assert (batch[t].time <= batch[t].seed_time).all(), t
            total_timed += batch[t].num_nodes
        key = batch[t].batch * f1_graph.num_nodes(t) + batch[t].n_id
        assert len(key.unique()) == len(key)  # one copy of a row per seed
    assert total_timed > 1000
    for et in f1_graph.edge_types:
        ei = batch[et].edge_index
        assert torch.equal(batch[et[0]].batch[ei[0]], batch[et[2]].batch[ei[1]])  # disjoint
        real = graph_edges(f1_graph, et)
        assert all(e in real for e in global_edges(batch, et)), et


def test_temporal_f1_fanouts_without_replacement_and_exact(f1_graph, driver_batch):
    seeds, times, batch = driver_batch
    for et in f1_graph.edge_types:
        ei = batch[et].edge_index
        pairs = list(zip(ei[0].tolist(), ei[1].tolist()))
        assert len(set(pairs)) == len(pairs), et  # no neighbour twice for one parent
        indeg = torch.bincount(ei[1], minlength=batch[et[2]].num_nodes)
        is_seed = torch.zeros(batch[et[2]].num_nodes, dtype=torch.bool)
        if et[2] == "drivers":
            is_seed[:512] = True
        assert (indeg[is_seed] <= 5).all() and (indeg[~is_seed] <= 2).all(), et
    # Seed in-degree over results = min(5, results of that driver dated <= seed time).
    et = ("results", "f2p_driverId", "drivers")
    ei = f1_graph.data[et].edge_index
    res_time = f1_graph.data["results"].time[ei[0]]
    allowed = ((ei[1][None, :] == seeds[:, None]) & (res_time[None, :] <= times[:, None])).sum(1)
    indeg = torch.bincount(batch[et].edge_index[1], minlength=batch["drivers"].num_nodes)[:512]
    assert torch.equal(indeg, allowed.clamp(max=5))
    assert (allowed > 5).any() and ((allowed > 0) & (allowed <= 5)).any()


def test_temporal_f1_large_fanout_hubs(f1_graph):
    """Constructors have up to ~1.8k results: fan-out 128 over hubs, all three regimes."""
    sampler = TemporalNeighborSampler(f1_graph, [128])
    seeds = torch.arange(f1_graph.num_nodes("constructors"))
    times = torch.full_like(seeds, unix("2010-01-01"))
    batch = sampler.sample("constructors", seeds, times, generator=1)
    et = ("results", "f2p_constructorId", "constructors")
    ei = batch[et].edge_index
    indeg = torch.bincount(ei[1], minlength=len(seeds))
    full = torch.bincount(f1_graph.data[et].edge_index[1], minlength=len(seeds))
    assert torch.equal(indeg, full.clamp(max=128))
    assert len(set(zip(ei[0].tolist(), ei[1].tolist()))) == ei.size(1)


def test_temporal_reproducible(f1_graph):
    sampler = TemporalNeighborSampler(f1_graph, [16, 8])
    seeds, times = torch.arange(64), torch.full((64,), unix("2000-01-01"))
    a = sampler.sample("drivers", seeds, times, generator=torch.Generator().manual_seed(5))
    b = sampler.sample("drivers", seeds, times, generator=torch.Generator().manual_seed(5))
    c = sampler.sample("drivers", seeds, times, generator=torch.Generator().manual_seed(6))
    for t in a.node_types:
        assert torch.equal(a[t].n_id, b[t].n_id) and torch.equal(a[t].batch, b[t].batch)
    for et in a.edge_types:
        assert torch.equal(a[et].edge_index, b[et].edge_index)
    assert any(not torch.equal(a[t].n_id, c[t].n_id) for t in a.node_types)


def test_temporal_fanout_arguments(f1_graph):
    assert TemporalNeighborSampler(f1_graph, 128, num_layers=2).fanouts == [128, 128]
    with pytest.raises(ValueError):
        TemporalNeighborSampler(f1_graph, 128)
    with pytest.raises(ValueError):
        TemporalNeighborSampler(f1_graph, [128, 64], num_layers=3)
