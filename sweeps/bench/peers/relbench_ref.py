"""A RelBench-style fine-tuning step: RelBench's example GNN on rel-f1 batches.

The model is RelBench's ``examples/model.py`` ``Model`` as ``examples/gnn_entity.py``
builds it (channels 128, 2 layers, aggr sum, BatchNorm head): relbench's
``HeteroEncoder`` (torch_frame ``ResNet``, 4 blocks) + ``HeteroTemporalEncoder`` +
``HeteroGraphSAGE`` + ``MLP(channels, out_channels=1, norm="batch_norm",
num_layers=1)``. Only its constructor arguments differ: ``col_stats_dict`` is passed
in (the example reads ``data.col_stats_dict``).

Two ways of feeding it:

* :func:`neighbor_loader` -- PyG's ``NeighborLoader`` over the torch_sparse wheel.
  RelBench's loader is *temporal* (``time_attr="time"``, which PyG runs disjoint, one
  subgraph per seed); that needs pyg-lib, which has no wheel here, so this loader is
  NON-temporal and non-disjoint: fewer nodes per batch than RelBench's (rows shared by
  seeds are sampled once), and neighbours dated after a seed are not filtered out
  (label leakage: its validation metric is not comparable). The transform attaches
  what RelBench's loader would: ``y`` and ``seed_time`` of the seeds; torch_sparse
  gives no node -> seed map, so ``batch`` is 0 for non-seed nodes (a cost-neutral
  stand-in for the temporal encoder's ``seed_time[batch]`` look-up).
* :func:`expand_relcore_batch` -- a relcore temporal batch (disjoint, time-filtered:
  what pyg-lib's temporal ``NeighborLoader`` returns) with every node's row
  materialised (relcore's batches hold each distinct row once plus ``row_index``):
  RelBench's computation on RelBench-shaped batches.
"""

from __future__ import annotations

from typing import Any

import torch
from relbench.modeling.nn import HeteroEncoder, HeteroGraphSAGE, HeteroTemporalEncoder
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.nn import MLP

from relcore.sampling.batch import slice_tensor_frame


class RelBenchModel(torch.nn.Module):
    """RelBench ``examples/model.py`` ``Model`` (see the module docstring)."""

    def __init__(self, data: HeteroData, col_stats_dict: dict[str, dict[str, Any]], num_layers: int = 2,
                 channels: int = 128, out_channels: int = 1, aggr: str = "sum", norm: str = "batch_norm"):
        super().__init__()
        self.encoder = HeteroEncoder(
            channels=channels,
            node_to_col_names_dict={t: data[t].tf.col_names_dict for t in data.node_types},
            node_to_col_stats=col_stats_dict,
        )
        self.temporal_encoder = HeteroTemporalEncoder(
            node_types=[t for t in data.node_types if "time" in data[t]], channels=channels)
        self.gnn = HeteroGraphSAGE(node_types=data.node_types, edge_types=data.edge_types,
                                   channels=channels, aggr=aggr, num_layers=num_layers)
        self.head = MLP(channels, out_channels=out_channels, norm=norm, num_layers=1)

    def forward(self, batch: HeteroData, entity_table: str) -> Tensor:
        seed_time = batch[entity_table].seed_time
        x_dict = self.encoder(batch.tf_dict)
        rel_time_dict = self.temporal_encoder(seed_time, batch.time_dict, batch.batch_dict)
        for node_type, rel_time in rel_time_dict.items():
            x_dict[node_type] = x_dict[node_type] + rel_time
        # (torch_sparse batches carry no per-hop counts; relbench's GraphSAGE ignores them)
        x_dict = self.gnn(x_dict, batch.edge_index_dict,
                          batch.collect("num_sampled_nodes", allow_empty=True) or None,
                          batch.collect("num_sampled_edges", allow_empty=True) or None)
        return self.head(x_dict[entity_table][: seed_time.size(0)])


def neighbor_loader(data: HeteroData, entity_table: str, ids: Tensor, times: Tensor, y: Tensor,
                    num_neighbors: list[int], batch_size: int, shuffle: bool):
    """PyG ``NeighborLoader`` (torch_sparse, non-temporal) over a task split's seeds."""
    from torch_geometric.loader import NeighborLoader

    timed = [t for t in data.node_types if "time" in data[t]]

    def attach(batch: HeteroData) -> HeteroData:
        store = batch[entity_table]
        store.y = y.index_select(0, store.input_id)
        store.seed_time = times.index_select(0, store.input_id)
        for t in timed:
            b = torch.zeros(batch[t].num_nodes, dtype=torch.long)
            if t == entity_table:
                b[: store.batch_size] = torch.arange(store.batch_size)
            batch[t].batch = b
        return batch

    return NeighborLoader(data, num_neighbors=list(num_neighbors), batch_size=batch_size, shuffle=shuffle,
                          input_nodes=(entity_table, ids), transform=attach)


def expand_relcore_batch(batch: HeteroData, entity_table: str) -> HeteroData:
    """A relcore temporal batch as RelBench's model reads it: per-node ``tf`` (rows
    repeated as pyg-lib's disjoint loader repeats them), per-seed ``seed_time``, per-node
    ``batch``; ``num_sampled_*`` as lists (relbench's GraphSAGE ignores them)."""
    out = HeteroData()
    bs = batch[entity_table].batch_size
    for t in batch.node_types:
        s, o = batch[t], out[t]
        o.tf = slice_tensor_frame(s.tf, s.row_index) if "row_index" in s else s.tf
        o.num_nodes = s.num_nodes
        o.num_sampled_nodes = s.num_sampled_nodes
        if "time" in s:
            o.time = s.time
            o.batch = s.batch
    for et in batch.edge_types:
        out[et].edge_index = batch[et].edge_index
        out[et].num_sampled_edges = batch[et].num_sampled_edges
    out[entity_table].seed_time = batch[entity_table].seed_time[:bs]
    out[entity_table].batch_size = bs
    return out
