"""The RDL backbones on real rel-f1 mini-batches: shapes, empty types, temporal encoding,
the fused GraphSAGE, configs, graph meta data and checkpoints."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from relbench.modeling.nn import HeteroGraphSAGE
from torch_geometric.data import HeteroData

from relcore.errors import RelcoreError
from relcore.models import (
    BackboneConfig,
    GraphMeta,
    MLPHead,
    RDLBackbone,
    load_backbone,
    read_checkpoint,
    save_backbone,
)
from relcore.models.plan import full_plan

CHANNELS = 32  # small for speed; the paper's 128 is the default


def f1_batch(graph, per_type: int | dict[str, int], seed: int = 0, temporal: bool = False) -> HeteroData:
    """Random rows of every table plus the edges among them, in the samplers' batch layout."""
    g = torch.Generator().manual_seed(seed)
    sizes = per_type if isinstance(per_type, dict) else {t: per_type for t in graph.node_types}
    n_id = {t: torch.randperm(graph.num_nodes(t), generator=g)[:sizes.get(t, 0)].sort().values
            for t in graph.node_types}
    batch = graph.data.subgraph(n_id)
    for t, ids in n_id.items():
        batch[t].n_id = ids
        batch[t].num_nodes = ids.numel()
        if temporal:
            # one seed per node, dated 0-3 years after the row (untimed tables: any date)
            base = batch[t].time if "time" in batch[t] else torch.full((ids.numel(),), 10 ** 9)
            batch[t].seed_time = base + torch.randint(0, 3 * 365 * 86400, (ids.numel(),), generator=g)
            batch[t].batch = torch.arange(ids.numel())
    return batch


@pytest.fixture(scope="module")
def meta(f1_graph) -> GraphMeta:
    return GraphMeta.from_graph(f1_graph)


@pytest.fixture(scope="module")
def batch(f1_graph) -> HeteroData:
    return f1_batch(f1_graph, 80, seed=0)


def make(meta, **kw) -> RDLBackbone:
    torch.manual_seed(0)
    return RDLBackbone(BackboneConfig(channels=CHANNELS, **kw), meta)


def outputs_equal(a: dict, b: dict, atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


# -- config and meta ----------------------------------------------------------------------


def test_config_dict_round_trip():
    cfg = BackboneConfig(table_model="resnet", channels=64, layers=3, aggr="mean", resnet_layers=2, dropout=0.1)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert BackboneConfig.from_dict(d) == cfg
    assert BackboneConfig.from_dict({}) == BackboneConfig()
    # MLflow logs params as strings; Ray Tune hands numpy scalars
    as_strings = {k: str(v) for k, v in cfg.to_dict().items()}
    assert BackboneConfig.from_dict(as_strings) == cfg
    assert BackboneConfig.from_dict({"layers": np.int64(3), "dropout": np.float32(0.5)}).layers == 3


@pytest.mark.parametrize("bad", [{"layers": 4}, {"aggr": "max"}, {"table_model": "mlp"}, {"channels": 7},
                                 {"dropout": 1.0}, {"resnet_layers": 0}, {"nope": 1}, {"layers": "two"},
                                 {"layers": 2.5}])
def test_config_rejects(bad):
    with pytest.raises(RelcoreError):
        BackboneConfig.from_dict(bad)


def test_graph_meta_serialisable(meta, f1_graph):
    d = json.loads(json.dumps(meta.to_dict()))
    back = GraphMeta.from_dict(d)
    assert back.schema() == meta.schema() and back.schema_mismatch(meta) is None
    assert pickle.loads(pickle.dumps(meta)).schema() == meta.schema()
    assert set(meta.time_node_types) == {t for t in f1_graph.node_types if f1_graph.time(t) is not None}
    # a backbone built from the round-tripped meta is the same model
    a, b = make(meta), make(back)
    b.load_state_dict(a.state_dict())
    batch = f1_batch(f1_graph, 30, seed=5)
    a.eval(), b.eval()
    with torch.no_grad():
        assert outputs_equal(a(batch), b(batch))


# -- forward ----------------------------------------------------------------------------


@pytest.mark.parametrize("table_model", ["linear", "resnet"])
@pytest.mark.parametrize("layers", [2, 3])
@pytest.mark.parametrize("aggr", ["sum", "mean"])
def test_backbone_shapes_and_gradients(meta, batch, table_model, layers, aggr):
    model = make(meta, table_model=table_model, layers=layers, aggr=aggr)
    out = model(batch)
    assert set(out) == set(batch.node_types)
    for t, x in out.items():
        assert x.shape == (batch[t].num_nodes, CHANNELS), t
        assert torch.isfinite(x).all(), t
    sum(x.sum() for x in out.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert len(model.gnn.convs) == layers
    assert all(conv.aggr == aggr for hc in model.gnn.convs for conv in hc.convs.values())


def test_paper_defaults(meta):
    model = RDLBackbone(BackboneConfig(), meta)
    assert model.channels == 128
    head = MLPHead()
    y = head(torch.randn(5, 128))
    assert y.shape == (5, 1)
    assert isinstance(head.norm, torch.nn.BatchNorm1d) and head.lin1.out_features == 128


def test_numerical_nulls_give_finite_gradients(meta, f1_graph):
    """results has numerical columns that are mostly null: gradients must stay finite."""
    model = make(meta)
    b = f1_batch(f1_graph, {"results": 200}, seed=3)
    assert torch.isnan(b["results"].tf.feat_dict[next(iter(b["results"].tf.feat_dict))]).any()
    model(b)["results"].sum().backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("table_model", ["linear", "resnet"])
def test_empty_node_types(meta, f1_graph, table_model):
    sizes = {t: 40 for t in f1_graph.node_types}
    sizes["drivers"] = 0
    sizes["circuits"] = 0
    b = f1_batch(f1_graph, sizes, seed=1)
    model = make(meta, table_model=table_model)
    out = model(b)
    assert out["drivers"].shape == (0, CHANNELS) and out["circuits"].shape == (0, CHANNELS)
    assert all(torch.isfinite(x).all() for x in out.values())
    sum(x.sum() for x in out.values()).backward()
    # a batch whose edge types are all empty still works (each type keeps its own rows)
    for et in b.edge_types:
        b[et].edge_index = torch.zeros(2, 0, dtype=torch.long)
    out = model(b)
    assert out["results"].shape == (40, CHANNELS)


def test_fused_sage_equals_heteroconv(meta, f1_graph):
    # uneven type sizes, so that both the aggregate-then-project and the
    # project-then-aggregate paths (fewer source than destination rows) are taken
    sizes = {"races": 150, "circuits": 60, "drivers": 120, "results": 300, "standings": 80,
             "constructors": 100, "constructor_results": 90, "constructor_standings": 40, "qualifying": 70}
    b = f1_batch(f1_graph, sizes, seed=6)
    ei = {et: b[et].edge_index for et in b.edge_types}
    for aggr in ("sum", "mean"):
        model = make(meta, layers=3, aggr=aggr)
        x = {t: v.detach().requires_grad_() for t, v in model.encode_rows(b).items()}
        fused = model.gnn(x, full_plan({t: b[t].num_nodes for t in b.node_types}, ei, 3))
        ref = model.gnn.forward_reference(x, ei)
        assert outputs_equal(fused, ref, atol=1e-5)
        params = [p for p in model.gnn.parameters()]
        g_fused = torch.autograd.grad(sum((o ** 2).sum() for o in fused.values()), params + list(x.values()),
                                      allow_unused=True)
        g_ref = torch.autograd.grad(sum((o ** 2).sum() for o in ref.values()), params + list(x.values()),
                                    allow_unused=True)
        for a, r in zip(g_fused, g_ref):
            assert (a is None) == (r is None)
            if a is not None:
                assert float((a - r).abs().max()) <= 1e-4 * float(r.abs().max()) + 1e-6


@pytest.mark.parametrize("table_model", ["linear", "resnet"])
def test_folded_table_models_equal_reference(meta, batch, table_model):
    """The folded products compute the literal 'concatenate, then linear' (values and gradients)."""
    model = make(meta, table_model=table_model, dropout=0.0)
    for t in batch.node_types:
        tm, tf = model.table_models[t], batch[t].tf
        params = list(tm.parameters())
        a, r = tm(tf), tm.forward_reference(tf)
        assert torch.allclose(a, r, atol=1e-5, rtol=1e-5), t
        g_a = torch.autograd.grad((a ** 2).sum(), params, allow_unused=True)
        g_r = torch.autograd.grad((r ** 2).sum(), params, allow_unused=True)
        for ga, gr in zip(g_a, g_r):
            assert (ga is None) == (gr is None)
            if ga is not None:
                assert float((ga - gr).abs().max()) <= 1e-4 * float(gr.abs().max()) + 1e-6, t


def test_fast_dropout():
    from relcore.models.table import FastDropout

    drop = FastDropout(0.25)
    x = torch.ones(200, 500)
    y = drop(x)
    assert abs(float((y == 0).float().mean()) - 0.25) < 0.01
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.75))
    assert abs(float(y.mean()) - 1.0) < 0.02
    assert torch.equal(drop.eval()(x), x)


def test_gnn_state_dict_matches_relbench(meta):
    model = make(meta, layers=3)
    ref = HeteroGraphSAGE(meta.node_types, meta.edge_types, CHANNELS, num_layers=3)
    assert model.gnn.state_dict().keys() == ref.state_dict().keys()


# -- temporal encoding ----------------------------------------------------------------------


def test_temporal_encoding_only_with_seed_time(meta, f1_graph):
    model = make(meta).eval()
    assert set(model.temporal.lin_dict.keys()) == set(meta.time_node_types)
    timed = f1_batch(f1_graph, 60, seed=2, temporal=True)
    plain = timed.clone()
    for t in plain.node_types:
        del plain[t].seed_time
        del plain[t].batch
    with torch.no_grad():
        rows_t, rows_p = model.encode_rows(timed), model.encode_rows(plain)
        out_t, out_p = model(timed), model(plain)
        for t in meta.node_types:
            same = torch.equal(rows_t[t], rows_p[t])
            assert same == (t not in meta.time_node_types), t  # only timed tables get the encoding
        assert not torch.allclose(out_t["results"], out_p["results"])
        # outputs depend on seed_time, not just on its presence
        shifted = timed.clone()
        for t in shifted.node_types:
            shifted[t].seed_time = shifted[t].seed_time + 400 * 86400
        assert not torch.allclose(model(shifted)["results"], out_t["results"])
        # the encoder is of seed_time - time: shifting both leaves the rows unchanged
        both = shifted.clone()
        for t in meta.time_node_types:
            both[t].time = both[t].time + 400 * 86400
        assert torch.allclose(model.encode_rows(both)["results"], rows_t["results"], atol=1e-5)

    off = make(meta, temporal=False).eval()
    assert off.temporal is None
    with torch.no_grad():
        assert outputs_equal(off(timed), off(plain))


# -- checkpoints --------------------------------------------------------------------------


@pytest.mark.parametrize("table_model", ["linear", "resnet"])
def test_save_load_round_trip(meta, f1_graph, batch, tmp_path, table_model):
    model = make(meta, table_model=table_model, layers=3, aggr="mean")
    path = tmp_path / "ckpt" / "backbone.pt"
    extra = {"step": np.int64(120), "loss": np.float32(0.5), "tags": ("a", "b"), "src": tmp_path}
    assert save_backbone(path, model, extra) == path
    assert [p.name for p in path.parent.iterdir()] == ["backbone.pt"]  # no temp file left behind
    loaded = load_backbone(path, f1_graph)
    assert loaded.config == model.config
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert outputs_equal(model(batch), loaded(batch))
    timed = f1_batch(f1_graph, 40, seed=4, temporal=True)
    with torch.no_grad():
        assert outputs_equal(model(timed), loaded(timed))
    ckpt = read_checkpoint(path)
    assert ckpt.extra == {"step": 120, "loss": 0.5, "tags": ["a", "b"], "src": str(tmp_path)}
    assert load_backbone(path, meta).config == model.config  # a GraphMeta works too
    # overwriting is atomic too
    save_backbone(path, model)
    assert read_checkpoint(path).extra == {}


def test_load_rejects_schema_mismatch(meta, tmp_path):
    path = save_backbone(tmp_path / "b.pt", make(meta))
    d = meta.to_dict()
    dropped = json.loads(json.dumps(d))
    dropped["col_names_dict"]["results"]["numerical"].remove("points")
    del dropped["col_stats"]["results"]["points"]
    fewer_edges = json.loads(json.dumps(d))
    fewer_edges["edge_types"] = fewer_edges["edge_types"][:-1]
    renamed = json.loads(json.dumps(d).replace('"circuits"', '"tracks"'))
    for bad, needle in [(dropped, "results"), (fewer_edges, "edge types"), (renamed, "tables")]:
        with pytest.raises(RelcoreError) as e:
            load_backbone(path, GraphMeta.from_dict(bad))
        assert needle in str(e.value) and "\n" not in str(e.value)


def test_load_rejects_missing_and_corrupt_files(meta, tmp_path):
    with pytest.raises(RelcoreError, match="not found"):
        load_backbone(tmp_path / "missing.pt", meta)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    truncated = tmp_path / "truncated.pt"
    good = save_backbone(tmp_path / "good.pt", make(meta))
    truncated.write_bytes(good.read_bytes()[:1000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for p in (garbage, truncated, foreign):
        with pytest.raises(RelcoreError) as e:
            load_backbone(p, meta)
        assert "\n" not in str(e.value)
    # weights that do not fit the stored config are reported too
    payload = torch.load(good, weights_only=True)
    payload["state_dict"] = {k: v for i, (k, v) in enumerate(payload["state_dict"].items()) if i}
    torch.save(payload, tmp_path / "partial.pt")
    with pytest.raises(RelcoreError, match="weights"):
        load_backbone(tmp_path / "partial.pt", meta)


def test_save_rejects_unstorable_extra(meta, tmp_path):
    with pytest.raises(RelcoreError):
        save_backbone(tmp_path / "x.pt", make(meta), {"fn": object()})
    assert not list(tmp_path.iterdir())


def test_load_refuses_when_category_ids_mean_other_values(meta, tmp_path):
    path = save_backbone(tmp_path / "b.pt", make(meta))
    d = json.loads(json.dumps(meta.to_dict()))
    years = d["col_stats"]["races"]["year"]["COUNT"]
    years[0] = list(reversed(years[0]))  # same vocabulary size, other id -> year mapping
    with pytest.raises(RelcoreError, match=r"encoders: category vocabulary of 'races.year' differs") as e:
        load_backbone(path, GraphMeta.from_dict(d))
    assert "\n" not in str(e.value)
