"""Fine-tuning's fast paths compute exactly what the plain forward pass computes."""

from __future__ import annotations

import pytest
import torch

from relcore.models import BackboneConfig, GraphMeta, RDLBackbone
from relcore.models.plan import full_plan, trimmed_plan
from relcore.sampling.temporal import TemporalNeighborSampler


@pytest.mark.parametrize("table_model,layers,aggr", [("resnet", 2, "sum"), ("linear", 3, "mean")])
def test_trimmed_layers_and_row_cache_match_full_forward(f1_graph, table_model, layers, aggr):
    torch.manual_seed(0)
    backbone = RDLBackbone(BackboneConfig(table_model=table_model, layers=layers, aggr=aggr),
                           GraphMeta.from_graph(f1_graph)).eval()
    sampler = TemporalNeighborSampler(f1_graph, [16] * layers)
    seeds = torch.arange(64)
    batch = sampler.sample("drivers", seeds, torch.full((64,), 1_100_000_000), generator=0)
    n = batch["drivers"].batch_size
    with torch.no_grad():
        x = backbone.encode_rows(batch)  # distinct rows encoded once, expanded by row_index
        full = backbone.gnn(x, full_plan({t: batch[t].num_nodes for t in batch.node_types},
                                         {et: batch[et].edge_index for et in batch.edge_types}, layers))["drivers"][:n]
        trimmed = backbone(batch)["drivers"][:n]
        cached = backbone(batch, backbone.encode_tables(f1_graph.data))["drivers"][:n]
    torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)
    # rows reached from several seeds are encoded once
    assert len(batch["races"].tf) < batch["races"].num_nodes


@pytest.mark.parametrize("table_model", ["linear", "resnet"])
def test_one_pass_over_both_views_equals_two_passes(f1_graph, table_model):
    from relcore.corruption import MarginalPool
    from relcore.corruption import corrupt_batch
    from relcore.sampling.batch import disjoint_union
    from relcore.sampling.hgt import HGSampler

    gen = torch.Generator().manual_seed(1)
    clean = HGSampler(f1_graph).sample(64, generator=gen)
    corrupted = corrupt_batch(clean, 0.4, MarginalPool(f1_graph), "marginal", gen)
    backbone = RDLBackbone(BackboneConfig(table_model=table_model), GraphMeta.from_graph(f1_graph)).eval()
    with torch.no_grad():
        union = backbone(disjoint_union(clean, corrupted))
        a, b = backbone(clean), backbone(corrupted)
    for t in a:
        n = clean[t].num_nodes
        torch.testing.assert_close(union[t][:n], a[t], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(union[t][n:], b[t], rtol=1e-5, atol=1e-5)


def test_time_encoding_per_distinct_difference_equals_relbench_per_node(f1_graph):
    """RelativeTimeEncoder encodes each distinct seed_time - time once; relbench's
    HeteroTemporalEncoder encodes every node. Same values and same gradients."""
    from relbench.modeling.nn import HeteroTemporalEncoder

    torch.manual_seed(0)
    backbone = RDLBackbone(BackboneConfig(), GraphMeta.from_graph(f1_graph))
    ours = backbone.temporal
    theirs = HeteroTemporalEncoder(list(ours.lin_dict.keys()), backbone.channels)
    theirs.load_state_dict(ours.state_dict())
    seed_times = torch.tensor([1_000_000_000, 1_100_000_000, 1_200_000_000]).repeat_interleave(32)
    batch = TemporalNeighborSampler(f1_graph, [16, 16]).sample("drivers", torch.arange(96), seed_times, generator=0)
    timed = [t for t in ours.lin_dict if t in batch.node_types and batch[t].num_nodes]
    ours_out = ours({t: batch[t].seed_time for t in timed}, {t: batch[t].time for t in timed})
    theirs_out = theirs(seed_times, {t: batch[t].time for t in timed}, {t: batch[t].batch for t in timed})
    repeated = 0
    for t in timed:
        torch.testing.assert_close(ours_out[t], theirs_out[t], rtol=1e-5, atol=1e-5)
        repeated += batch[t].num_nodes - (batch[t].seed_time - batch[t].time).unique().numel()
    assert repeated > 0  # the batch does repeat differences, so the look-up path is exercised
    sum(o.square().sum() for o in ours_out.values()).backward()
    sum(o.square().sum() for o in theirs_out.values()).backward()
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        if b.grad is None:  # a timed table absent from this batch
            assert a.grad is None, name
            continue
        # sums over thousands of nodes in another order: equal up to float rounding
        scale = float(b.grad.abs().max())
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("aggr", ["sum", "mean"])
def test_factored_first_layer_equals_materialised_inputs(f1_graph, aggr, monkeypatch):
    """The first layer's sparse products over (row, time) look-ups give the same seed
    outputs and the same parameter gradients as per-node input vectors."""
    from relcore.models.factored import FactoredRows

    monkeypatch.setattr("relcore.models.backbone.FACTOR_MIN_REPEATS", 0)  # factor every type, however small

    torch.manual_seed(0)
    backbone = RDLBackbone(BackboneConfig(table_model="resnet", layers=3, aggr=aggr),
                           GraphMeta.from_graph(f1_graph)).eval()
    seed_times = torch.tensor([1_000_000_000, 1_200_000_000]).repeat_interleave(24)
    batch = TemporalNeighborSampler(f1_graph, [8, 8, 8]).sample("drivers", torch.arange(48), seed_times, generator=0)
    n = batch["drivers"].batch_size
    plan = trimmed_plan({t: batch[t].num_sampled_nodes for t in batch.node_types},
                        {et: batch[et].num_sampled_edges for et in batch.edge_types},
                        {et: batch[et].edge_index for et in batch.edge_types}, 3)

    def seeds_and_grads(factored: bool):
        backbone.zero_grad()
        x = backbone.encode_rows(batch, factored=factored)
        assert all(isinstance(v, FactoredRows) == factored for v in x.values())
        out = backbone.gnn(x, plan)["drivers"][:n]
        out.square().sum().backward()
        return out.detach(), {k: p.grad.clone() for k, p in backbone.named_parameters() if p.grad is not None}

    out_f, grads_f = seeds_and_grads(True)
    out_d, grads_d = seeds_and_grads(False)
    torch.testing.assert_close(out_f, out_d, rtol=1e-5, atol=1e-5)
    assert grads_f.keys() == grads_d.keys() and any(k.startswith("temporal.") for k in grads_f)
    for k in grads_d:
        scale = float(grads_d[k].abs().max()) or 1.0
        torch.testing.assert_close(grads_f[k], grads_d[k], rtol=1e-4, atol=1e-5 * scale, msg=k)
