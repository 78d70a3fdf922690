"""Sharing identical computations (relcore.models.plan) changes no value and no gradient."""

from __future__ import annotations

import pytest
import torch

from relcore.models import BackboneConfig, GraphMeta, RDLBackbone
from relcore.models.plan import shared_plan, trimmed_plan
from relcore.sampling.temporal import TemporalNeighborSampler

# Drivers who raced shortly before each of two timestamps: seeds of one timestamp reach
# the same races, and a race's results, standings and qualifying rows (under the last
# hop's fan-out) are all taken, so their sub-trees repeat across seeds.
SEED_TIMES = (1_000_000_000, 1_200_000_000)
FANOUTS = {2: [4, 64], 3: [4, 4, 64]}


def time_batch(graph, layers: int):
    results = graph.data["results"]
    result_of, driver = graph.data["results", "f2p_driverId", "drivers"].edge_index
    seeds, times = [], []
    for t in SEED_TIMES:
        recent = (results.time[result_of] < t) & (results.time[result_of] > t - 200 * 86400)
        active = driver[recent].unique()[:40]
        seeds.append(active)
        times.append(torch.full((len(active),), t))
    return TemporalNeighborSampler(graph, FANOUTS[layers]).sample("drivers", torch.cat(seeds), torch.cat(times),
                                                                  generator=0)


def outputs_and_grads(backbone, batch, share: bool, row_cache=None):
    backbone.share = share
    backbone.zero_grad()
    n = batch["drivers"].batch_size
    out = backbone(batch, row_cache)["drivers"][:n]
    (out.square().sum() + out.sum()).backward()
    return out.detach(), {k: p.grad.clone() for k, p in backbone.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("layers", [2, 3])
@pytest.mark.parametrize("aggr", ["sum", "mean"])
@pytest.mark.parametrize("mode", ["B", "P"])
def test_shared_plan_equals_per_occurrence(f1_graph, layers, aggr, mode):
    torch.manual_seed(0)
    backbone = RDLBackbone(BackboneConfig(table_model="resnet", layers=layers, aggr=aggr, dropout=0.0),
                           GraphMeta.from_graph(f1_graph))
    row_cache = None
    if mode == "P":  # frozen tables, encoded once; the temporal encoder still trains
        backbone.eval()
        row_cache = backbone.encode_tables(f1_graph.data)
        for name, p in backbone.named_parameters():
            p.requires_grad_(name.startswith("temporal."))
    batch = time_batch(f1_graph, layers)
    shared, shared_grads = outputs_and_grads(backbone, batch, True, row_cache)
    each, each_grads = outputs_and_grads(backbone, batch, False, row_cache)
    torch.testing.assert_close(shared, each, rtol=1e-5, atol=1e-5)
    assert shared_grads.keys() == each_grads.keys() and shared_grads
    for k in each_grads:
        scale = float(each_grads[k].abs().max()) or 1.0
        torch.testing.assert_close(shared_grads[k], each_grads[k], rtol=1e-4, atol=1e-5 * scale, msg=k)

    backbone.share = True
    shared_rows = [sum(layer.num_out.values()) for layer in backbone.plan(batch).layers]
    each_rows = [sum(layer.num_out.values()) for layer in trimmed_plan(*_hops(batch), _edges(batch), layers).layers]
    if layers == 2:  # hop-1 rows are each driver's own: no two nodes with outputs share a key
        assert shared_rows == each_rows
    else:  # hop-2 races (and what they reach) are computed once per timestamp
        assert shared_rows[0] < 0.9 * each_rows[0]


def test_shared_plan_keys_on_seed_time_and_subtree(f1_graph):
    """One driver twice at one time (all neighbours taken, so identical sub-trees) is
    computed once at every layer; at two times, nothing is shared."""
    sampler = TemporalNeighborSampler(f1_graph, [-1, -1, -1])
    driver = torch.tensor([20, 20])

    def plans(times):
        batch = sampler.sample("drivers", driver, torch.tensor(times), generator=0)
        shared = shared_plan({t: batch[t].n_id for t in batch.node_types},
                             {t: batch[t].seed_time for t in batch.node_types}, *_hops(batch), _edges(batch), 3)
        return shared, trimmed_plan(*_hops(batch), _edges(batch), 3)

    shared, each = plans([1_200_000_000, 1_200_000_000])
    assert shared.out["drivers"].tolist() == [0, 0]
    for a, b in zip(shared.layers, each.layers):
        assert {t: 2 * n for t, n in a.num_out.items()} == b.num_out
        assert sum(e.size(1) for e in a.edges.values()) * 2 == sum(e.size(1) for e in b.edges.values())
    shared, each = plans([1_100_000_000, 1_200_000_000])
    assert all(nodes is None for nodes in shared.inputs.values())  # the trimmed plan itself
    assert [layer.num_out for layer in shared.layers] == [layer.num_out for layer in each.layers]


def _hops(batch):
    return ({t: batch[t].num_sampled_nodes for t in batch.node_types},
            {et: batch[et].num_sampled_edges for et in batch.edge_types})


def _edges(batch):
    return {et: batch[et].edge_index for et in batch.edge_types}
