"""Assembling a sampled subgraph into the ``HeteroData`` batch the models consume."""

from __future__ import annotations

import numpy as np
import torch
from torch_frame import TensorFrame
from torch_frame.data import MultiEmbeddingTensor
from torch_geometric.data import HeteroData

EdgeType = tuple[str, str, str]


def make_batch(
    data: HeteroData,
    node_ids: dict[str, np.ndarray],
    edges: dict[EdgeType, tuple[np.ndarray, np.ndarray]],
    seed_type: str,
    batch_size: int,
    node_attrs: dict[str, dict[str, torch.Tensor]] | None = None,
    unique_rows: bool = False,
) -> HeteroData:
    """A batch with every node and edge type of ``data``, empty where nothing was sampled.

    Per node type: ``n_id`` (original rows), ``tf`` (those TensorFrame rows),
    ``num_nodes``, ``time`` for timed tables, plus ``node_attrs[type]``; with
    ``unique_rows``, ``tf`` holds each distinct row once and ``row_index`` maps
    nodes to its rows; per edge
    type ``edge_index`` in local indices. ``batch[seed_type].batch_size`` and
    ``batch.seed_type`` mark the seeds, which come first.
    """
    batch = HeteroData()
    empty = np.empty(0, dtype=np.int64)
    no_edges = torch.empty(2, 0, dtype=torch.long)
    for node_type in data.node_types:
        store = data[node_type]
        n_id = torch.from_numpy(np.ascontiguousarray(node_ids.get(node_type, empty), dtype=np.int64))
        out = batch[node_type]
        out.n_id = n_id
        if unique_rows and len(n_id):
            # Disjoint sampling repeats rows (a race reached from 100 seeds): slice
            # and encode each distinct row once; row_index maps nodes to tf rows.
            rows, inverse = np.unique(node_ids[node_type], return_inverse=True)
            out.tf = slice_tensor_frame(store.tf, torch.from_numpy(rows))
            out.row_index = torch.from_numpy(inverse.reshape(-1))
        else:
            out.tf = slice_tensor_frame(store.tf, n_id)
        out.num_nodes = len(n_id)
        if "time" in store:
            out.time = store.time.index_select(0, n_id)
        for name, value in (node_attrs or {}).get(node_type, {}).items():
            out[name] = value
    for et in data.edge_types:
        src, dst = edges.get(et, (empty, empty))
        batch[et].edge_index = torch.from_numpy(np.stack([src, dst])) if len(src) else no_edges.clone()
    batch[seed_type].batch_size = batch_size
    batch.seed_type = seed_type
    return batch


def slice_tensor_frame(tf: TensorFrame, index: torch.Tensor) -> TensorFrame:
    """``tf[index]`` (same result), via ``index_select``.

    TensorFrame's ``__getitem__`` uses advanced indexing (``x[index]``), several
    times slower than ``index_select`` on CPU, and copying rows is a large share of
    a batch's cost.
    """
    feat_dict = {st: _rows(x, index) for st, x in tf.feat_dict.items()}
    y = None if tf.y is None else _rows(tf.y, index)
    return TensorFrame(feat_dict=feat_dict, col_names_dict=tf.col_names_dict, y=y, num_rows=len(index))


def _rows(x, index: torch.Tensor):
    if isinstance(x, torch.Tensor):
        return x.index_select(0, index)
    if isinstance(x, dict):
        return {k: _rows(v, index) for k, v in x.items()}
    if isinstance(x, MultiEmbeddingTensor):
        return MultiEmbeddingTensor(num_rows=len(index), num_cols=x.num_cols,
                                    values=x.values.index_select(0, index), offset=x.offset)
    return x.index_select(index, dim=0)  # MultiNestedTensor


def disjoint_union(a: HeteroData, b: HeteroData) -> HeteroData:
    """Two batches over the same types as one graph: ``a``'s nodes first, then ``b``'s.

    Running a model once on the union instead of twice halves the number of kernel
    launches, which is what a CPU step of small subgraphs is made of; row-wise
    modules (table models, LayerNorm, SAGE) give each half the same output as alone.
    """
    import torch_frame

    out = HeteroData()
    for t in a.node_types:
        sa, sb, so = a[t], b[t], out[t]
        so.tf = torch_frame.cat([sa.tf, sb.tf], dim=0)
        so.n_id = torch.cat([sa.n_id, sb.n_id])
        so.num_nodes = sa.num_nodes + sb.num_nodes
        if "time" in sa:
            so.time = torch.cat([sa.time, sb.time])
    for et in a.edge_types:
        shift = torch.tensor([[a[et[0]].num_nodes], [a[et[2]].num_nodes]], device=a[et].edge_index.device)
        out[et].edge_index = torch.cat([a[et].edge_index, b[et].edge_index + shift], dim=1)
    return out
