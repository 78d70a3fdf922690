"""Temporal neighbour sampling for fine-tuning (RelBench / PyG ``NeighborLoader``).

Semantics of PyG's ``NeighborLoader(..., time_attr="time", disjoint=True,
temporal_strategy="uniform")``, vectorised in numpy over the time-sorted CSR of
:mod:`relcore.sampling.csr`, so it runs without pyg-lib.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch_geometric.data import HeteroData

from relcore.graph import RelGraph
from relcore.sampling.batch import make_batch
from relcore.sampling.csr import CSR, EdgeType, build_csr, num_nodes_of
from relcore.sampling.ops import GeneratorLike, as_rng, segment_sample


@dataclass
class _TypeState:
    """Nodes of one type sampled so far, keyed by (seed index, row) for de-duplication."""

    num_rows: int
    ids: list[np.ndarray] = field(default_factory=list)
    seeds: list[np.ndarray] = field(default_factory=list)
    count: int = 0
    keys: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # sorted
    key_local: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def add(self, keys: np.ndarray, final: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Local indices of ``keys = seed * num_rows + row``, creating unseen ones.

        Returns ``(local index per key, local indices of the new nodes)``. ``final``:
        no later lookups, so the sorted key index is not updated.
        """
        local = np.empty(len(keys), dtype=np.int64)
        pos = np.searchsorted(self.keys, keys)
        found = pos < len(self.keys)
        found[found] = self.keys[pos[found]] == keys[found]
        local[found] = self.key_local[pos[found]]
        new_keys, inverse = np.unique(keys[~found], return_inverse=True)
        new_local = np.arange(self.count, self.count + len(new_keys), dtype=np.int64)
        local[~found] = new_local[inverse]
        self.count += len(new_keys)
        self.ids.append(new_keys % self.num_rows)
        self.seeds.append(new_keys // self.num_rows)
        if final:
            return local, new_local
        merged = np.concatenate([self.keys, new_keys])
        order = np.argsort(merged, kind="stable")
        self.keys = merged[order]
        self.key_local = np.concatenate([self.key_local, new_local])[order]
        return local, new_local


class TemporalNeighborSampler:
    r"""Disjoint, time-respecting multi-hop neighbour sampling.

    Algorithm: each seed :math:`i` (row :math:`v_i`, time :math:`\tau_i`) grows
    its own subgraph. At hop :math:`h`, for every frontier node :math:`u` of seed
    :math:`i` and every edge type into :math:`u`'s type, up to ``fanouts[h]`` of
    :math:`u`'s incoming source neighbours are drawn uniformly *without
    replacement* among those with time :math:`\le \tau_i` (rows of tables without
    time always qualify); all of them when there are at most ``fanouts[h]``
    (``-1`` takes all). A drawn row already in seed :math:`i`'s subgraph is linked,
    not duplicated; new ones form the next frontier. The same row reached from two
    seeds appears once per seed, each copy with its seed's ``seed_time`` and
    ``batch``, so nothing dated after :math:`\tau_i` ever enters seed :math:`i`'s
    subgraph, even through another seed.

    Vectorised over all frontier nodes of a type at once: the allowed neighbours of
    ``u`` are a prefix of its time-sorted CSR row, whose length is one composite-key
    ``searchsorted`` (:meth:`CSR.count_upto`); the draws use
    :func:`~relcore.sampling.ops.segment_sample` (O(fanout log fanout) per node even
    for hubs with thousands of neighbours); nodes are de-duplicated per seed by
    sorting keys ``seed * num_rows + row``. Cost is O(sampled entries · log), never
    O(num_nodes).

    Output (see :func:`~relcore.sampling.batch.make_batch`): every node and edge
    type; seeds first in the given order (``batch[seed_type].batch_size``); per node
    ``seed_time`` and ``batch`` (seed index); edges are the sampled ones, src → dst.

    Args:
        graph: the relational graph.
        fanouts: neighbours per (node, edge type) at each hop, or one int used for
            ``num_layers`` hops.
        num_layers: number of hops when ``fanouts`` is an int.
    """

    def __init__(self, graph: RelGraph, fanouts: Sequence[int] | int, num_layers: int | None = None) -> None:
        if isinstance(fanouts, numbers.Integral):
            if num_layers is None:
                raise ValueError("an int fanout needs num_layers")
            fanouts = [fanouts] * num_layers
        elif num_layers is not None and num_layers != len(fanouts):
            raise ValueError(f"num_layers={num_layers} but {len(fanouts)} fanouts given")
        self.fanouts = [int(k) for k in fanouts]
        self.graph = graph
        self.data: HeteroData = graph.data
        self.csr: dict[EdgeType, CSR] = build_csr(graph)
        self.num_nodes = {t: num_nodes_of(self.data, t) for t in self.data.node_types}
        self.in_types = {t: [et for et in self.data.edge_types if et[2] == t] for t in self.data.node_types}

    def sample(
        self,
        seed_type: str,
        seed_ids: torch.Tensor,
        seed_times: torch.Tensor | int,
        generator: GeneratorLike = None,
    ) -> HeteroData:
        """Subgraphs of ``seed_ids`` of ``seed_type`` as of ``seed_times`` (unix s)."""
        if seed_type not in self.num_nodes:
            raise ValueError(f"unknown seed type '{seed_type}'")
        rng = as_rng(generator)
        seeds = _as_numpy(seed_ids).reshape(-1)
        times = np.array(np.broadcast_to(_as_numpy(seed_times), seeds.shape))
        num_seeds = len(seeds)
        if num_seeds and (seeds.min() < 0 or seeds.max() >= self.num_nodes[seed_type]):
            raise ValueError(f"seed_ids out of range for '{seed_type}'")

        state = {t: _TypeState(max(n, 1)) for t, n in self.num_nodes.items()}
        _, seed_local = state[seed_type].add(np.arange(num_seeds, dtype=np.int64) * state[seed_type].num_rows + seeds)
        edges: dict[EdgeType, list[tuple[np.ndarray, np.ndarray]]] = {et: [] for et in self.data.edge_types}
        # frontier: type -> (local index, row id, seed index)
        frontier = {seed_type: (seed_local, seeds, np.arange(num_seeds, dtype=np.int64))}
        # Per-hop counts (PyG's num_sampled_nodes / num_sampled_edges): nodes are laid
        # out hop by hop and edges of hop h all point into nodes of hop h, so a model
        # can trim every layer to the nodes whose outputs are still needed.
        node_counts = {t: [s.count] for t, s in state.items()}
        edge_counts: dict[EdgeType, list[int]] = {et: [] for et in edges}
        for hop, fanout in enumerate(self.fanouts):
            final = hop == len(self.fanouts) - 1
            frontier = self._hop(frontier, fanout, times, state, edges, rng, final)
            for t, st in state.items():
                node_counts[t].append(st.count)
            for et, parts in edges.items():
                edge_counts[et].append(sum(len(d) for _, d in parts))

        node_ids = {t: _cat(s.ids) for t, s in state.items()}
        seed_index = {t: _cat(s.seeds) for t, s in state.items()}
        times_t = torch.from_numpy(times)
        attrs = {}
        for t, b in seed_index.items():
            b = torch.from_numpy(b)
            attrs[t] = {"batch": b, "seed_time": times_t.index_select(0, b)}
        edge_out = {et: (_cat([s for s, _ in parts]), _cat([d for _, d in parts])) for et, parts in edges.items()}
        batch = make_batch(self.data, node_ids, edge_out, seed_type, num_seeds, attrs, unique_rows=True)
        for t, counts in node_counts.items():
            batch[t].num_sampled_nodes = np.diff(counts, prepend=0).tolist()
        for et, counts in edge_counts.items():
            batch[et].num_sampled_edges = np.diff(counts, prepend=0).tolist()
        return batch

    def _hop(self, frontier, fanout: int, times: np.ndarray, state: dict[str, _TypeState],
             edges: dict, rng: np.random.Generator, final: bool) -> dict:
        """Sample one hop for every frontier type; return the next frontier."""
        drawn: dict[str, list[tuple[EdgeType, np.ndarray, np.ndarray, np.ndarray]]] = {}
        for dst_type, (local, rows, seed) in frontier.items():
            for et in self.in_types[dst_type]:
                csr = self.csr[et]
                allowed = csr.count_upto(rows, times[seed])  # untimed source: full degree
                seg, off = segment_sample(allowed, fanout, rng)
                src = csr.col[csr.rowptr[rows[seg]] + off]
                drawn.setdefault(et[0], []).append((et, src, seed[seg], local[seg]))

        next_frontier = {}
        for src_type, parts in drawn.items():
            st = state[src_type]
            keys = np.concatenate([seed * st.num_rows + src for _, src, seed, _ in parts])
            src_local, new_local = st.add(keys, final)
            if len(new_local):
                next_frontier[src_type] = (new_local, st.ids[-1], st.seeds[-1])
            start = 0
            for et, src, _, dst_local in parts:
                edges[et].append((src_local[start:start + len(src)], dst_local))
                start += len(src)
        return next_frontier


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy().astype(np.int64, copy=False)
    return np.asarray(x, dtype=np.int64)


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
