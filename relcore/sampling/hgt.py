"""Heterogeneous mini-batch graph sampling (HGSampling) for pretraining.

Hu et al., "Heterogeneous Graph Transformer", WWW 2020, Algorithm 1, with the
semantics of PyG's ``HGTLoader``, vectorised in numpy over CSR arrays built once
(:mod:`relcore.sampling.csr`) so it runs without pyg-lib / torch-sparse.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import HeteroData

from relcore.graph import RelGraph
from relcore.sampling.batch import make_batch
from relcore.sampling.csr import CSR, EdgeType, build_csr, node_time, num_nodes_of, reverse_edge_types
from relcore.sampling.ops import GeneratorLike, as_rng, distinct, ragged_arange, segment_sample, weighted_sample


def default_seed_type(graph: RelGraph) -> str:
    """The table with the most foreign keys (ties: more rows); ``results`` on rel-f1."""
    schema = graph.schema
    return max(schema, key=lambda t: (len(schema[t]["fkeys"]), schema[t]["rows"]))


class HGSampler:
    r"""HGSampling: balanced, type-aware subgraphs of a relational graph.

    Algorithm (HGT, Alg. 1; PyG ``HGTLoader``): draw ``batch_size`` seed rows of
    ``seed_type`` uniformly without replacement and add their neighbours to a
    per-type budget. Then ``iterations`` times:

    1. for every node type :math:`\tau`, draw up to ``num_samples`` nodes from its
       budget without replacement with probability
       :math:`\propto B[\tau][t]^2` (all types draw from the budget as it stood at
       the start of the iteration);
    2. add them to the sample and remove them from the budget;
    3. for every newly sampled node :math:`s` and every edge type into its type,
       each not-yet-sampled neighbour :math:`t` gets
       :math:`B[\tau(t)][t] \mathrel{+}= 1 / \deg_{rel}(s)`. Like PyG, a node with
       more than ``max_neighbors`` neighbours of one relation contributes through a
       uniform sample of ``max_neighbors`` of them (still weighted
       :math:`1/\deg_{rel}(s)`), so hub rows cost O(max_neighbors).

    The batch is the subgraph *induced* on the sampled nodes: every edge of every
    edge type between them. So each type has at most
    ``seeds + iterations * num_samples`` nodes.

    ``max_time`` prunes the database to a timestamp: only rows of untimed tables or
    with time :math:`\le` ``max_time`` can be seeds, neighbours or budget entries
    (in the time-sorted CSR these are a prefix of each row, found once here), and
    degrees count only those.

    Every node type is sampled, every node type and edge type is in the output
    (see :func:`~relcore.sampling.batch.make_batch`). Persistent per-type scratch
    arrays (budget, global-to-local map) are reset only at touched entries, so a
    call costs O(sampled work), never O(num_nodes); hence one instance must not be
    used from two threads at once (separate DataLoader worker processes are fine).

    Args:
        graph: the relational graph.
        num_samples: nodes drawn per node type per iteration.
        iterations: sampling rounds after the seeds.
        seed_type: seed table; default :func:`default_seed_type`.
        max_time: unix seconds; nothing dated later is ever sampled.
        max_neighbors: per-(node, relation) cap on neighbours added to the budget
            (PyG's 520); ``None`` for no cap.
    """

    def __init__(
        self,
        graph: RelGraph,
        num_samples: int = 64,
        iterations: int = 3,
        seed_type: str | None = None,
        max_time: int | None = None,
        max_neighbors: int | None = 520,
    ) -> None:
        self.graph = graph
        self.data: HeteroData = graph.data
        self.num_samples = int(num_samples)
        self.iterations = int(iterations)
        self.seed_type = seed_type if seed_type is not None else default_seed_type(graph)
        if self.seed_type not in self.data.node_types:
            raise ValueError(f"unknown seed type '{self.seed_type}'")
        self.max_time = max_time
        self.max_neighbors = max_neighbors
        self.node_types: list[str] = list(self.data.node_types)
        self.edge_types: list[EdgeType] = list(self.data.edge_types)
        self.csr: dict[EdgeType, CSR] = build_csr(graph)
        self.num_nodes = {t: num_nodes_of(self.data, t) for t in self.node_types}
        self.in_types = {t: [et for et in self.edge_types if et[2] == t] for t in self.node_types}
        self.row_end = {et: self._allowed_row_end(csr) for et, csr in self.csr.items()}
        self.reverse = reverse_edge_types(graph)
        self.seed_pool = self._allowed_rows(self.seed_type)
        # Scratch, reset after every call at the entries it touched.
        self._budget = {t: np.zeros(n) for t, n in self.num_nodes.items()}
        self._local = {t: np.full(n, -1, dtype=np.int64) for t, n in self.num_nodes.items()}
        self._slot = {t: np.zeros(n, dtype=np.int64) for t, n in self.num_nodes.items()}  # never reset

    # ------------------------------------------------------------------ set-up
    def _allowed_row_end(self, csr: CSR) -> np.ndarray:
        """End of each CSR row's allowed prefix (neighbours dated <= max_time)."""
        if self.max_time is None or csr.col_time is None:
            return csr.rowptr[1:]
        rows = np.arange(csr.num_dst, dtype=np.int64)
        return csr.rowptr[:-1] + csr.count_upto(rows, self.max_time)

    def _allowed_rows(self, node_type: str) -> np.ndarray:
        time = node_time(self.data, node_type)
        if self.max_time is None or time is None:
            return np.arange(self.num_nodes[node_type], dtype=np.int64)
        return np.flatnonzero(time <= self.max_time).astype(np.int64)

    # ---------------------------------------------------------------- sampling
    def sample(
        self,
        batch_size: int = 64,
        generator: GeneratorLike = None,
        seed_ids: torch.Tensor | np.ndarray | None = None,
    ) -> HeteroData:
        """One HGSampling subgraph.

        Args:
            batch_size: number of seeds drawn uniformly without replacement from the
                allowed rows of ``seed_type`` (ignored when ``seed_ids`` is given).
            generator: torch / numpy generator or int seed; ``None`` uses torch's
                global RNG, so ``torch.manual_seed`` makes runs reproducible.
            seed_ids: explicit seed rows (e.g. to cover a table epoch by epoch).
        """
        rng = as_rng(generator)
        seeds = self._seeds(batch_size, seed_ids, rng)
        nodes: dict[str, list[np.ndarray]] = {t: [] for t in self.node_types}
        cand: dict[str, list[np.ndarray]] = {t: [] for t in self.node_types}
        try:
            self._add(self.seed_type, seeds, nodes)
            self._update_budget({self.seed_type: seeds}, cand, rng)
            for _ in range(self.iterations):
                new = {t: self._draw(t, cand, rng) for t in self.node_types}
                new = {t: ids for t, ids in new.items() if len(ids)}
                for t, ids in new.items():
                    self._add(t, ids, nodes)
                self._update_budget(new, cand, rng)
            node_ids = {t: np.concatenate(v) if v else np.empty(0, np.int64) for t, v in nodes.items()}
            edges = {et: self._induced_edges(et, node_ids) for et in self.edge_types}
        finally:
            self._reset(nodes, cand)
        return make_batch(self.data, node_ids, edges, self.seed_type, len(seeds))

    def _seeds(self, batch_size: int, seed_ids, rng: np.random.Generator) -> np.ndarray:
        if seed_ids is None:
            size = min(int(batch_size), len(self.seed_pool))
            return rng.choice(self.seed_pool, size=size, replace=False)
        seeds = np.asarray(seed_ids, dtype=np.int64).reshape(-1)
        if len(np.unique(seeds)) != len(seeds):
            raise ValueError("seed_ids must be distinct")
        time = node_time(self.data, self.seed_type)
        if self.max_time is not None and time is not None and (time[seeds] > self.max_time).any():
            raise ValueError("seed_ids include rows dated after max_time")
        return seeds

    def _add(self, node_type: str, ids: np.ndarray, nodes: dict[str, list[np.ndarray]]) -> None:
        """Give ``ids`` the next local indices and take them out of the budget."""
        start = sum(len(a) for a in nodes[node_type])
        self._local[node_type][ids] = np.arange(start, start + len(ids))
        self._budget[node_type][ids] = 0.0
        nodes[node_type].append(ids)

    def _draw(self, node_type: str, cand: dict[str, list[np.ndarray]], rng: np.random.Generator) -> np.ndarray:
        """Up to ``num_samples`` budget entries of a type, probability ∝ budget²."""
        if not cand[node_type]:
            return np.empty(0, dtype=np.int64)
        ids = np.concatenate(cand[node_type])  # distinct: see _update_budget
        ids = ids[self._local[node_type][ids] < 0]  # sampled since they entered the budget
        cand[node_type] = [ids]
        return ids[weighted_sample(self._budget[node_type][ids] ** 2, self.num_samples, rng)]

    def _update_budget(self, new: dict[str, np.ndarray], cand: dict[str, list[np.ndarray]],
                       rng: np.random.Generator) -> None:
        """Budget += 1/deg_rel(s) for each unsampled neighbour of each new node s."""
        for dst_type, ids in new.items():
            for et in self.in_types[dst_type]:
                src_type, csr = et[0], self.csr[et]
                start = csr.rowptr[ids]
                deg = self.row_end[et][ids] - start
                if self.max_neighbors is None:
                    seg, off = ragged_arange(deg)
                else:
                    seg, off = segment_sample(deg, self.max_neighbors, rng)
                nbr = csr.col[start[seg] + off]
                keep = self._local[src_type][nbr] < 0
                nbr = nbr[keep]
                budget = self._budget[src_type]
                fresh = nbr[budget[nbr] == 0.0]  # not yet a candidate (with repeats)
                np.add.at(budget, nbr, 1.0 / deg[seg[keep]])
                cand[src_type].append(distinct(fresh, self._slot[src_type]))

    def _induced_edges(self, et: EdgeType, node_ids: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """All edges of ``et`` among sampled nodes, as local (src, dst).

        Scans the CSR rows of the sampled destinations, or (when the reverse edge type
        exists and that is cheaper, e.g. an f2p edge into a hub table) the reverse
        CSR rows of the sampled sources.
        """
        src_type, _, dst_type = et
        src_ids, dst_ids = node_ids[src_type], node_ids[dst_type]
        if not len(src_ids) or not len(dst_ids):
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        rev = self.reverse[et]
        dst_cost = (self.row_end[et][dst_ids] - self.csr[et].rowptr[dst_ids]).sum()
        if rev is not None:
            src_cost = (self.row_end[rev][src_ids] - self.csr[rev].rowptr[src_ids]).sum()
            if src_cost < dst_cost:
                return self._edges_into(rev, src_ids, dst_type, src_type)
        dst_local, src_local = self._edges_into(et, dst_ids, src_type, dst_type)
        return src_local, dst_local

    def _edges_into(self, et: EdgeType, rows: np.ndarray, nbr_type: str, row_type: str):
        """(local row, local neighbour) of every sampled neighbour of sampled ``rows``."""
        csr = self.csr[et]
        start = csr.rowptr[rows]
        seg, off = ragged_arange(self.row_end[et][rows] - start)
        nbr_local = self._local[nbr_type][csr.col[start[seg] + off]]
        keep = nbr_local >= 0
        return self._local[row_type][rows[seg[keep]]], nbr_local[keep]

    def _reset(self, nodes: dict[str, list[np.ndarray]], cand: dict[str, list[np.ndarray]]) -> None:
        for t in self.node_types:
            for ids in nodes[t]:
                self._local[t][ids] = -1
            for ids in cand[t]:
                self._budget[t][ids] = 0.0
