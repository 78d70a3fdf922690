"""Per-edge-type CSR indices, grouped by destination and sorted by source time.

Row ``v`` of the CSR of edge type ``(src, rel, dst)`` lists the ``src`` rows that
send messages to ``dst`` row ``v``: exactly the neighbours a sampler draws for
``v``. When ``src`` has a time column a row's neighbours are sorted by time
(ties by id), so "neighbours dated at or before ``t``" is a prefix of the row
whose length is one binary search (:meth:`CSR.count_upto`).

Built once per graph with ``np.lexsort`` and cached on the :class:`RelGraph`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch_geometric.data import HeteroData

from relcore.graph import RelGraph

EdgeType = tuple[str, str, str]
_CACHE_ATTR = "_relcore_csr"
_REV_ATTR = "_relcore_csr_reverse"
_KEY_LIMIT = 2**62  # composite keys row * stride + time must stay below int64's range


@dataclass(eq=False)
class CSR:
    """Incoming neighbours of every destination row of one edge type.

    Attributes:
        rowptr: ``[num_dst + 1]`` offsets; row ``v`` is ``col[rowptr[v]:rowptr[v+1]]``.
        col: ``[E]`` source row ids.
        col_time: ``[E]`` source times (ascending within each row) or ``None`` when
            the source table has no time column.
        perm: ``[E]`` position of each CSR entry in the original ``edge_index``.
        num_src: number of source rows.
    """

    rowptr: np.ndarray
    col: np.ndarray
    col_time: np.ndarray | None
    perm: np.ndarray
    num_src: int
    _keys: np.ndarray | None = field(default=None, repr=False)
    _tmin: int = 0
    _stride: int = 0
    _max_degree: int = 0

    def __post_init__(self) -> None:
        self.rowptr.setflags(write=False)
        self.col.setflags(write=False)
        self._max_degree = int(np.diff(self.rowptr).max(initial=0))
        if self.col_time is not None and len(self.col_time):
            self._tmin = int(self.col_time.min())
            self._stride = int(self.col_time.max()) - self._tmin + 2
            if self.num_dst * self._stride < _KEY_LIMIT:
                # Entry keys are sorted: rows ascending, times ascending within a row.
                row = np.repeat(np.arange(self.num_dst, dtype=np.int64), np.diff(self.rowptr))
                self._keys = row * self._stride + (self.col_time - self._tmin)

    @property
    def num_dst(self) -> int:
        return len(self.rowptr) - 1

    @property
    def num_edges(self) -> int:
        return len(self.col)

    def degree(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Number of incoming neighbours of ``rows`` (all rows by default)."""
        if rows is None:
            return np.diff(self.rowptr)
        return self.rowptr[rows + 1] - self.rowptr[rows]

    def count_upto(self, rows: np.ndarray, times: np.ndarray | int) -> np.ndarray:
        """For each ``rows[i]``, how many of its neighbours have time ``<= times[i]``.

        Those neighbours are ``col[rowptr[r] : rowptr[r] + count]``. Neighbours from a
        table without time are always counted. One ``searchsorted`` of composite
        keys ``row * stride + (time - tmin)`` (query times clipped to
        ``[tmin - 1, tmax]``, so a query never crosses into the next row); a
        vectorised bisection when those keys would overflow int64.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if self.col_time is None or self.num_edges == 0:
            return self.degree(rows)
        times = np.broadcast_to(np.asarray(times, dtype=np.int64), rows.shape)
        if self._max_degree <= 1:  # e.g. rev_f2p: a row's one parent; a compare beats a search
            start = self.rowptr[rows]
            first = self.col_time[np.minimum(start, self.num_edges - 1)]
            return ((self.rowptr[rows + 1] > start) & (first <= times)).astype(np.int64)
        if self._keys is not None:
            rel = np.clip(times - self._tmin, -1, self._stride - 2)
            end = _searchsorted(self._keys, rows * self._stride + rel)
            return end - self.rowptr[rows]
        return self._bisect(rows, times) - self.rowptr[rows]

    def _bisect(self, rows: np.ndarray, times: np.ndarray) -> np.ndarray:
        lo, hi = self.rowptr[rows].copy(), self.rowptr[rows + 1].copy()
        for _ in range(self._max_degree.bit_length() + 1):
            active = lo < hi
            mid = (lo + hi) // 2
            go_right = active & (self.col_time[np.minimum(mid, self.num_edges - 1)] <= times)
            lo = np.where(go_right, mid + 1, lo)
            hi = np.where(active & ~go_right, mid, hi)
        return lo


#: Above this many queries into a large index, sort them first (see _searchsorted).
_SORT_QUERIES_MIN = 4096


def _searchsorted(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``np.searchsorted(keys, queries, side="right")``, sorting large query sets first.

    numpy narrows each search from the previous one when queries ascend, so sorted
    queries walk the index nearly sequentially instead of missing cache (and TLB) on
    every probe: several times faster into a multi-million-entry index.
    """
    if len(queries) < _SORT_QUERIES_MIN or len(keys) < 65536:
        return np.searchsorted(keys, queries, side="right")
    order = np.argsort(queries)
    out = np.empty(len(queries), dtype=np.int64)
    out[order] = np.searchsorted(keys, queries[order], side="right")
    return out


def csr_from_edges(
    src: np.ndarray,
    dst: np.ndarray,
    num_src: int,
    num_dst: int,
    src_time: np.ndarray | None = None,
) -> CSR:
    """CSR grouped by ``dst``; within a row sorted by (source time, source id)."""
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    if src_time is None:
        perm = np.lexsort((src, dst))
        col_time = None
    else:
        t = np.asarray(src_time, dtype=np.int64)[src]
        perm = np.lexsort((src, t, dst))
        col_time = t[perm]
    rowptr = np.zeros(num_dst + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=num_dst), out=rowptr[1:])
    return CSR(rowptr=rowptr, col=src[perm], col_time=col_time, perm=perm.astype(np.int64), num_src=num_src)


def build_csr(graph: RelGraph | HeteroData) -> dict[EdgeType, CSR]:
    """The :class:`CSR` of every edge type of ``graph`` (cached on a :class:`RelGraph`)."""
    cached = getattr(graph, _CACHE_ATTR, None) if isinstance(graph, RelGraph) else None
    if cached is not None:
        return cached
    data = graph.data if isinstance(graph, RelGraph) else graph
    out = {}
    for et in data.edge_types:
        src_type, _, dst_type = et
        edge_index = data[et].edge_index.cpu().numpy()
        out[et] = csr_from_edges(
            edge_index[0], edge_index[1],
            num_src=num_nodes_of(data, src_type), num_dst=num_nodes_of(data, dst_type),
            src_time=node_time(data, src_type),
        )
    if isinstance(graph, RelGraph):
        setattr(graph, _CACHE_ATTR, out)
    return out


def num_nodes_of(data: HeteroData, node_type: str) -> int:
    store = data[node_type]
    return len(store.tf) if "tf" in store else int(store.num_nodes)


def node_time(data: HeteroData, node_type: str) -> np.ndarray | None:
    """Row times of a node type as int64 numpy (``None`` for a table without time)."""
    store = data[node_type]
    return store.time.cpu().numpy().astype(np.int64, copy=False) if "time" in store else None


def reverse_edge_type(et: EdgeType, edge_types: list[EdgeType]) -> EdgeType | None:
    """relbench's ``rev_<rel>`` partner of an edge type (either way), if the graph has it."""
    src, rel, dst = et
    rev = (dst, rel[4:], src) if rel.startswith("rev_") else (dst, f"rev_{rel}", src)
    return rev if rev in edge_types else None


def reverse_edge_types(graph: RelGraph | HeteroData) -> dict[EdgeType, EdgeType | None]:
    """Each edge type's reverse, only where it holds exactly the flipped edges
    (checked once, cached on a :class:`RelGraph`): its CSR, grouped by the other end,
    lets a sampler read an edge type from the cheaper side."""
    cached = getattr(graph, _REV_ATTR, None) if isinstance(graph, RelGraph) else None
    if cached is not None:
        return cached
    csr = build_csr(graph)
    edge_types = list(csr)
    out = {et: _flipped_if_equal(csr, et, reverse_edge_type(et, edge_types)) for et in edge_types}
    if isinstance(graph, RelGraph):
        setattr(graph, _REV_ATTR, out)
    return out


def _flipped_if_equal(csr: dict[EdgeType, CSR], et: EdgeType, rev: EdgeType | None) -> EdgeType | None:
    if rev is None or csr[et].num_edges != csr[rev].num_edges:
        return None
    fwd, bwd = csr[et], csr[rev]
    n_src = fwd.num_src
    fwd_keys = np.repeat(np.arange(fwd.num_dst), fwd.degree()) * n_src + fwd.col
    bwd_keys = bwd.col * n_src + np.repeat(np.arange(bwd.num_dst), bwd.degree())
    return rev if np.array_equal(np.sort(fwd_keys), np.sort(bwd_keys)) else None
