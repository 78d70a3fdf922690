"""SCARF-style corruption: every stype, both modes, the time cut-off, nulls, rates."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch_frame import TensorFrame, stype
from torch_frame.data.multi_embedding_tensor import MultiEmbeddingTensor
from torch_frame.data.multi_nested_tensor import MultiNestedTensor

from relcore.corruption import MarginalPool, corrupt, corrupt_batch
from relcore.errors import RelcoreError

ALL_STYPES = (stype.numerical, stype.categorical, stype.timestamp, stype.embedding, stype.multicategorical)


# -- helpers ----------------------------------------------------------------------------


def cell_values(feat, col: int) -> list:
    """Column ``col`` of any stype's feature as a list of hashable per-row values
    (NaN -> 'nan', vectors/lists -> tuples)."""
    if isinstance(feat, MultiNestedTensor):
        off = feat.offset.tolist()
        vals = feat.values.tolist()
        return [tuple(vals[off[r * feat.num_cols + col]:off[r * feat.num_cols + col + 1]])
                for r in range(feat.num_rows)]
    if isinstance(feat, MultiEmbeddingTensor):
        lo, hi = int(feat.offset[col]), int(feat.offset[col + 1])
        return [tuple(row) for row in feat.values[:, lo:hi].tolist()]
    if feat.dim() == 3:
        return [tuple(row) for row in feat[:, col].tolist()]
    return ["nan" if isinstance(v, float) and math.isnan(v) else v for v in feat[:, col].tolist()]


def num_cols(tf: TensorFrame, st: stype) -> int:
    return len(tf.col_names_dict[st])


def synthetic_tf(n: int, seed: int = 0) -> TensorFrame:
    """A table with every stype, nulls included, and one heavily skewed column."""
    g = torch.Generator().manual_seed(seed)
    skewed = (torch.rand(n, generator=g) < 0.02).float()  # 98% zeros
    other = torch.randint(0, 50, (n,), generator=g).float()
    other[torch.rand(n, generator=g) < 0.1] = float("nan")
    cat = torch.randint(-1, 6, (n, 1), generator=g)
    ts = torch.stack([torch.randint(1990, 2010, (n,), generator=g), torch.randint(0, 12, (n,), generator=g),
                      torch.randint(0, 28, (n,), generator=g)] + [torch.zeros(n, dtype=torch.long)] * 4, dim=1)
    ts[torch.rand(n, generator=g) < 0.1] = -1
    emb_values = torch.randint(0, 4, (n, 5), generator=g).float()  # few distinct vectors
    emb = MultiEmbeddingTensor(num_rows=n, num_cols=2, values=emb_values, offset=torch.tensor([0, 3, 5]))
    lists = [[torch.randint(0, 4, (int(torch.randint(0, 4, (1,), generator=g)),), generator=g) for _ in range(2)]
             for _ in range(n)]
    multi = MultiNestedTensor.from_tensor_mat(lists)
    return TensorFrame(
        feat_dict={stype.numerical: torch.stack([skewed, other], 1), stype.categorical: cat,
                   stype.timestamp: ts.unsqueeze(1), stype.embedding: emb, stype.multicategorical: multi},
        col_names_dict={stype.numerical: ["skewed", "other"], stype.categorical: ["cat"],
                        stype.timestamp: ["ts"], stype.embedding: ["e1", "e2"],
                        stype.multicategorical: ["m1", "m2"]},
    )


def frames_equal(a: TensorFrame, b: TensorFrame) -> bool:
    for st, fa in a.feat_dict.items():
        fb = b.feat_dict[st]
        for c in range(num_cols(a, st)):
            if cell_values(fa, c) != cell_values(fb, c):
                return False
    return a.col_names_dict == b.col_names_dict and len(a) == len(b)


@pytest.fixture(scope="module")
def synth():
    tf = synthetic_tf(3000)
    times = torch.arange(3000)
    return tf, times, MarginalPool({"t": tf}, max_time=1999, times={"t": times})


# -- tests ------------------------------------------------------------------------------


def test_p0_identical_and_new_object(synth):
    tf, _, pool = synth
    out = corrupt(tf, "t", 0.0, pool, generator=torch.Generator().manual_seed(0))
    assert out is not tf and frames_equal(out, tf)
    for st in ALL_STYPES:
        assert out.feat_dict[st] is not tf.feat_dict[st]


@pytest.mark.parametrize("mode", ["marginal", "uniform-unique"])
def test_p1_values_come_from_pool_column(synth, mode):
    tf, _, pool = synth
    before = copy.deepcopy(tf)
    out = corrupt(tf, "t", 1.0, pool, mode=mode, generator=torch.Generator().manual_seed(1))
    assert frames_equal(tf, before), "input TensorFrame was modified"
    assert len(out) == len(tf) and out.col_names_dict == tf.col_names_dict
    past = pool.pool_frame("t")
    for st in ALL_STYPES:
        assert type(out.feat_dict[st]) is type(tf.feat_dict[st])
        for c in range(num_cols(tf, st)):
            allowed = set(cell_values(past.feat_dict[st], c))
            drawn = cell_values(out.feat_dict[st], c)
            assert set(drawn) <= allowed, (st, c)
            if st != stype.numerical or c == 1:
                assert len(set(drawn)) > 1  # actually random, not one constant


def test_future_rows_never_drawn(synth):
    """Rows with time > max_time hold values found nowhere else: they must never appear."""
    tf, times, _ = synth
    feat = {st: copy.deepcopy(f) for st, f in tf.feat_dict.items()}
    future = times > 1999
    feat[stype.numerical][future, 1] = 123456.0
    feat[stype.categorical][future, 0] = 99
    feat[stype.timestamp][future, 0, 0] = 2999
    feat[stype.embedding].values[future, 0] = -7.0
    vals, off = feat[stype.multicategorical].values, feat[stype.multicategorical].offset
    cell = torch.repeat_interleave(torch.arange(off.numel() - 1), off.diff())
    vals[future[cell // 2]] = 42
    tf_s = TensorFrame(feat_dict=feat, col_names_dict=tf.col_names_dict)
    pool = MarginalPool({"t": tf_s}, max_time=1999, times={"t": times})
    assert pool.num_rows("t") == 2000
    for mode in ("marginal", "uniform-unique"):
        out = corrupt(tf_s[torch.arange(2000)], "t", 1.0, pool, mode=mode,
                      generator=torch.Generator().manual_seed(2))
        f = out.feat_dict
        assert not (f[stype.numerical][:, 1] == 123456.0).any()
        assert not (f[stype.categorical] == 99).any()
        assert not (f[stype.timestamp][:, 0, 0] == 2999).any()
        assert not (f[stype.embedding].values[:, 0] == -7.0).any()
        assert not (f[stype.multicategorical].values == 42).any()


def test_future_rows_never_drawn_rel_f1(f1_graph):
    """Same on real rel-f1 tables: a sentinel only in future results rows never leaks."""
    data = f1_graph.data
    tfs = {t: data[t].tf for t in data.node_types}
    times = {t: data[t].time for t in data.node_types if "time" in data[t]}
    max_time = int(times["results"].median())
    res = tfs["results"]
    num = res.feat_dict[stype.numerical].clone()
    ts = res.feat_dict[stype.timestamp].clone()
    future = times["results"] > max_time
    num[future] = -31337.0
    ts[future, :, 0] = 2999
    tfs["results"] = TensorFrame(feat_dict={stype.numerical: num, stype.timestamp: ts},
                                 col_names_dict=res.col_names_dict)
    pool = MarginalPool(tfs, max_time=max_time, times=times)
    assert pool.num_rows("results") == int((~future).sum())
    assert pool.num_rows("drivers") == f1_graph.num_nodes("drivers")  # untimed: every row
    rows = future.nonzero().view(-1)[:3000]
    for mode in ("marginal", "uniform-unique"):
        out = corrupt(tfs["results"][rows], "results", 1.0, pool, mode=mode,
                      generator=torch.Generator().manual_seed(3))
        assert not (out.feat_dict[stype.numerical] == -31337.0).any()
        assert not (out.feat_dict[stype.timestamp][..., 0] == 2999).any()


def test_pool_from_graph_respects_max_time(f1_graph):
    races_time = f1_graph.data["races"].time
    cut = int(races_time.median())
    pool = MarginalPool(f1_graph, max_time=cut)
    assert pool.num_rows("races") == int((races_time <= cut).sum())
    assert MarginalPool.from_graph(f1_graph).num_rows("races") == f1_graph.num_nodes("races")


@pytest.mark.parametrize("p", [0.15, 0.5])
def test_rate_close_to_p(synth, p):
    tf, _, pool = synth
    out, masks = corrupt(tf, "t", p, pool, generator=torch.Generator().manual_seed(4), return_mask=True)
    total = sum(m.numel() for m in masks.values())
    rate = sum(int(m.sum()) for m in masks.values()) / total
    assert abs(rate - p) < 0.02
    # a cell can only change where the mask says it was replaced
    for st, m in masks.items():
        for c in range(num_cols(tf, st)):
            changed = [a != b for a, b in zip(cell_values(tf.feat_dict[st], c), cell_values(out.feat_dict[st], c))]
            assert not any(ch and not mk for ch, mk in zip(changed, m[:, c].tolist()))
    # a high-cardinality column changes at ~p (minus the odds of drawing the same value)
    col = cell_values(tf.feat_dict[stype.embedding], 0)
    new = cell_values(out.feat_dict[stype.embedding], 0)
    frac = sum(a != b for a, b in zip(col, new)) / len(col)
    assert abs(frac - p * (1 - 1 / 64)) < 0.04


def test_rate_on_rel_f1(f1_graph):
    pool = MarginalPool(f1_graph)
    tf = f1_graph.data["drivers"].tf
    _, masks = corrupt(tf, "drivers", 0.3, pool, generator=torch.Generator().manual_seed(5), return_mask=True)
    rate = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert abs(rate - 0.3) < 0.03


def test_marginal_vs_uniform_unique_distribution(synth):
    """Marginal follows value frequencies; uniform-unique is flat over distinct values."""
    tf, _, pool = synth
    rows = torch.zeros(20000, dtype=torch.long)  # many copies of one row: a big sample
    big = tf[rows]
    g = torch.Generator().manual_seed(6)
    marg = corrupt(big, "t", 1.0, pool, "marginal", g).feat_dict[stype.numerical][:, 0]
    uni = corrupt(big, "t", 1.0, pool, "uniform-unique", g).feat_dict[stype.numerical][:, 0]
    past_ones = float(pool.pool_frame("t").feat_dict[stype.numerical][:, 0].mean())
    assert abs(float(marg.mean()) - past_ones) < 0.01  # ~2% ones
    assert abs(float(uni.mean()) - 0.5) < 0.02  # {0, 1} uniformly
    # uniform-unique over a column with nulls: NaN is one distinct value among the rest
    other = corrupt(big, "t", 1.0, pool, "uniform-unique", g).feat_dict[stype.numerical][:, 1]
    distinct = len(set(cell_values(pool.pool_frame("t").feat_dict[stype.numerical], 1)))
    assert abs(float(torch.isnan(other).float().mean()) - 1 / distinct) < 0.01


def test_nulls_are_drawn_like_values(f1_graph):
    """results.rank is ~90% null: marginal draws keep that rate."""
    pool = MarginalPool(f1_graph)
    tf = f1_graph.data["results"].tf
    col = tf.col_names_dict[stype.numerical].index("rank")
    out = corrupt(tf[torch.arange(5000)], "results", 1.0, pool, generator=torch.Generator().manual_seed(7))
    pool_nan = float(torch.isnan(pool.pool_frame("results").feat_dict[stype.numerical][:, col]).float().mean())
    out_nan = float(torch.isnan(out.feat_dict[stype.numerical][:, col]).float().mean())
    assert abs(out_nan - pool_nan) < 0.03


def test_rel_f1_every_table_every_stype(f1_graph):
    """p=1 on each real table: per column, every value is one of the pool's."""
    pool = MarginalPool(f1_graph)
    g = torch.Generator().manual_seed(8)
    for t in f1_graph.node_types:
        tf = f1_graph.data[t].tf
        sub = tf[torch.randperm(len(tf), generator=g)[:300]]
        before = copy.deepcopy(sub)
        for mode in ("marginal", "uniform-unique"):
            out = corrupt(sub, t, 1.0, pool, mode=mode, generator=g)
            assert frames_equal(sub, before)
            for st, feat in out.feat_dict.items():
                for c in range(num_cols(sub, st)):
                    assert set(cell_values(feat, c)) <= set(cell_values(pool.pool_frame(t).feat_dict[st], c)), \
                        (t, st, c)


def test_deterministic_with_generator(synth):
    tf, _, pool = synth
    a = corrupt(tf, "t", 0.4, pool, generator=torch.Generator().manual_seed(9))
    b = corrupt(tf, "t", 0.4, pool, generator=torch.Generator().manual_seed(9))
    assert frames_equal(a, b)


def test_empty_inputs(synth):
    tf, times, pool = synth
    out = corrupt(tf[torch.arange(0)], "t", 0.5, pool)
    assert len(out) == 0 and out.col_names_dict == tf.col_names_dict
    # a table whose rows are all in the future has an empty pool: nothing to draw, nothing changes
    empty_pool = MarginalPool({"t": tf}, max_time=-1, times={"t": times})
    assert empty_pool.num_rows("t") == 0
    assert frames_equal(corrupt(tf, "t", 1.0, empty_pool), tf)


def test_bad_arguments(synth):
    tf, _, pool = synth
    with pytest.raises(RelcoreError):
        corrupt(tf, "t", 1.5, pool)
    with pytest.raises(RelcoreError):
        corrupt(tf, "t", 0.5, pool, mode="gaussian")
    with pytest.raises(RelcoreError):
        corrupt(tf, "nope", 0.5, pool)


def test_corrupt_batch_leaves_clean_batch_alone(f1_graph):
    g = torch.Generator().manual_seed(10)
    n_id = {t: torch.randperm(f1_graph.num_nodes(t), generator=g)[:50] for t in f1_graph.node_types}
    batch = f1_graph.data.subgraph(n_id)
    before = {t: copy.deepcopy(batch[t].tf) for t in batch.node_types}
    view = corrupt_batch(batch, 0.5, MarginalPool(f1_graph), generator=g)
    for t in batch.node_types:
        assert frames_equal(batch[t].tf, before[t]), t
        assert view[t].tf is not batch[t].tf and len(view[t].tf) == len(batch[t].tf)
    assert not all(frames_equal(view[t].tf, before[t]) for t in batch.node_types)
    for et in batch.edge_types:
        assert torch.equal(view[et].edge_index, batch[et].edge_index)
