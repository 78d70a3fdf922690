"""Fine-tuning's fast paths compute exactly what the plain forward pass computes."""

from __future__ import annotations

import pytest
import torch

from relcore.models import BackboneConfig, GraphMeta, RDLBackbone
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
        full = backbone.gnn(x, {et: batch[et].edge_index for et in batch.edge_types})["drivers"][:n]
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
