r"""SCARF-style row corruption for the contrastive view.

Each attribute cell :math:`x_{r,c}` of a row is independently replaced, with
probability :math:`p`, by a draw from that column's distribution over the
*pretraining* database (rows with time :math:`\le` ``max_time``; all rows of tables
without a time column):

- ``"marginal"`` (the paper): the empirical marginal, i.e. the column's value in a
  uniformly random pool row;
- ``"uniform-unique"`` (the reference code): uniform over the column's distinct
  observed values.

Nulls (NaN, -1, empty lists) are observed values like any other. Keys are never
touched: they are not in the ``TensorFrame`` (relbench drops them) and edges are not
corrupted. Both modes reduce to "copy the cell from pool row :math:`s_{r,c}`" with a
mode-specific distribution of :math:`s` (uniform-unique draws among one representative
row per distinct value), so a single vectorised gather per stype does the copying,
for every stype pytorch-frame has: plain tensors (numerical, categorical,
timestamp), ``MultiEmbeddingTensor`` (embeddings, text embeddings) and
``MultiNestedTensor`` (multicategorical).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch_frame import TensorFrame, stype
from torch_frame.data.multi_embedding_tensor import MultiEmbeddingTensor
from torch_frame.data.multi_nested_tensor import MultiNestedTensor

from relcore.errors import RelcoreError

MODES = ("marginal", "uniform-unique")


@dataclass
class _DistinctRows:
    """Per column of one stype: one pool row per distinct value, packed flat.

    Column ``c``'s representatives are ``rows[start[c] : start[c] + count[c]]``.
    """

    rows: Tensor  # [U] long
    start: Tensor  # [C] long
    count: Tensor  # [C] long


@dataclass
class _TablePool:
    tf: TensorFrame  # the pool rows
    _distinct: dict[stype, _DistinctRows] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return len(self.tf)

    def distinct(self, st: stype) -> _DistinctRows:
        # Only "uniform-unique" needs these; computed on first use (unique() over the pool).
        if st not in self._distinct:
            self._distinct[st] = _distinct_rows(self.tf.feat_dict[st])
        return self._distinct[st]


class MarginalPool:
    """The pretraining database's rows, per table, to draw corrupting values from.

    Args:
        source: a :class:`~relcore.graph.RelGraph`, or ``{table: TensorFrame}``.
        max_time: rows of timed tables with ``time > max_time`` are left out (the
            future must not leak into pretraining); None keeps every row.
        times: ``{table: row times}`` when ``source`` is a mapping (tables missing
            from it are untimed).
    """

    def __init__(self, source, max_time: int | None = None, times: Mapping[str, Tensor | None] | None = None):
        if hasattr(source, "data"):
            data = source.data
            tfs = {t: data[t].tf for t in data.node_types}
            times = {t: data[t].time for t in data.node_types if "time" in data[t]}
        else:
            tfs = dict(source)
            times = dict(times or {})
        self.max_time = max_time
        self.tables: dict[str, _TablePool] = {}
        for t, tf in tfs.items():
            time = times.get(t)
            if time is None or max_time is None:
                pool_tf = tf
            else:
                pool_tf = tf[(time <= max_time).nonzero().view(-1)]
            self.tables[t] = _TablePool(pool_tf)

    @classmethod
    def from_graph(cls, graph, max_time: int | None = None) -> MarginalPool:
        return cls(graph, max_time)

    def num_rows(self, table: str) -> int:
        return self.tables[table].num_rows

    def pool_frame(self, table: str) -> TensorFrame:
        """The pool rows of ``table`` (read-only view; do not modify)."""
        return self.tables[table].tf


def corrupt(tf: TensorFrame, table: str, p: float, pool: MarginalPool, mode: str = "marginal",
            generator: torch.Generator | None = None, return_mask: bool = False):
    r"""A corrupted copy of ``tf`` (rows of ``table``): each cell replaced w.p. ``p``.

    .. math::
        \tilde{x}_{r,c} = \begin{cases} x_{s_{r,c},\,c} & m_{r,c} = 1 \\ x_{r,c} & m_{r,c} = 0
        \end{cases}, \qquad m_{r,c} \sim \mathrm{Bernoulli}(p)

    with :math:`s_{r,c}` a uniformly random pool row (``"marginal"``) or the pool row
    of a uniformly random distinct value of column :math:`c` (``"uniform-unique"``).
    A replacement may equal the original value (SCARF counts it as corrupted too).

    Returns:
        The new ``TensorFrame`` (same rows, columns and stypes; ``tf`` is untouched),
        and with ``return_mask=True`` also ``{stype: BoolTensor[rows, cols]}`` of the
        replaced cells.
    """
    if mode not in MODES:
        raise RelcoreError(f"corruption mode must be one of {MODES}, got {mode!r}")
    if not 0.0 <= p <= 1.0:
        raise RelcoreError(f"corruption probability must be in [0, 1], got {p!r}")
    if table not in pool.tables:
        raise RelcoreError(f"corruption pool has no table '{table}'")
    tp = pool.tables[table]
    if tf.col_names_dict != tp.tf.col_names_dict:
        raise RelcoreError(f"columns of '{table}' differ from the corruption pool's")

    n = len(tf)
    feat_dict, masks = {}, {}
    for st, feat in tf.feat_dict.items():
        num_cols = len(tf.col_names_dict[st])
        if tp.num_rows == 0 or p == 0.0 or n == 0:
            mask = torch.zeros(n, num_cols, dtype=torch.bool)
        else:
            mask = torch.rand(n, num_cols, generator=generator) < p
        src = _draw_source_rows(n, num_cols, tp, st, mode, generator) if mask.any() else \
            torch.zeros(n, num_cols, dtype=torch.long)
        feat_dict[st] = _replace(feat, tp.tf.feat_dict[st], mask, src)
        masks[st] = mask
    out = TensorFrame(feat_dict=feat_dict, col_names_dict={st: list(c) for st, c in tf.col_names_dict.items()},
                      y=None if tf.y is None else tf.y.clone())
    return (out, masks) if return_mask else out


def corrupt_batch(batch, p: float, pool: MarginalPool, mode: str = "marginal",
                  generator: torch.Generator | None = None):
    """The corrupted view of a mini-batch: a shallow copy of ``batch`` (a ``HeteroData``)
    whose every ``batch[t].tf`` is :func:`corrupt`-ed; node ids, times and edges are
    shared with ``batch``, which is left untouched."""
    out = copy.copy(batch)
    for t in batch.node_types:
        if "tf" in batch[t]:
            out[t].tf = corrupt(batch[t].tf, t, p, pool, mode=mode, generator=generator)
    return out


# -- drawing --------------------------------------------------------------------------


def _draw_source_rows(n: int, num_cols: int, tp: _TablePool, st: stype, mode: str,
                      generator: torch.Generator | None) -> Tensor:
    """``[n, num_cols]`` pool row to copy each cell from."""
    if mode == "marginal":
        return torch.randint(tp.num_rows, (n, num_cols), generator=generator)
    d = tp.distinct(st)
    # floor(U * count) is uniform on {0..count-1}; the minimum guards float rounding up to count.
    k = torch.minimum((torch.rand(n, num_cols, generator=generator) * d.count).long(), d.count - 1)
    return d.rows[d.start + k]


def _replace(feat, pool_feat, mask: Tensor, src: Tensor):
    """``feat`` with cell ``(r, c)`` replaced by ``pool_feat[src[r, c], c]`` where ``mask``."""
    if isinstance(feat, MultiNestedTensor):
        if not mask.any():
            return MultiNestedTensor(num_rows=feat.num_rows, num_cols=feat.num_cols, values=feat.values.clone(),
                                     offset=feat.offset.clone())
        return _replace_nested(feat, pool_feat, mask, src)
    if isinstance(feat, MultiEmbeddingTensor):
        col_of = torch.repeat_interleave(torch.arange(feat.num_cols), feat.offset.diff())  # [D]
        values = feat.values
        if values.size(0) and mask.any():
            drawn = pool_feat.values.gather(0, src[:, col_of])
            values = torch.where(mask[:, col_of], drawn, values)
        else:
            values = values.clone()
        return MultiEmbeddingTensor(num_rows=feat.num_rows, num_cols=feat.num_cols, values=values,
                                    offset=feat.offset.clone())
    if isinstance(feat, Tensor):
        if feat.size(0) == 0 or not mask.any():
            return feat.clone()
        if feat.dim() == 2:  # numerical, categorical: [rows, cols]
            return torch.where(mask, pool_feat.gather(0, src), feat)
        # timestamp: [rows, cols, parts]
        idx = src.unsqueeze(-1).expand(*src.shape, feat.size(-1))
        return torch.where(mask.unsqueeze(-1), pool_feat.gather(0, idx), feat)
    raise TypeError(f"cannot corrupt a {type(feat).__name__}")


def _replace_nested(feat: MultiNestedTensor, pool_feat: MultiNestedTensor, mask: Tensor,
                    src: Tensor) -> MultiNestedTensor:
    """Variable-length cells: pick each output cell's (start, length) in the
    concatenation [feat.values, pool.values], then expand to element indices."""
    num_rows, num_cols = feat.num_rows, feat.num_cols
    cols = torch.arange(num_cols).expand(num_rows, num_cols)
    in_start, in_len = feat.offset[:-1], feat.offset.diff()
    pool_cell = (src * num_cols + cols).reshape(-1)
    pool_start = pool_feat.offset[:-1][pool_cell] + feat.values.numel()
    pool_len = pool_feat.offset.diff()[pool_cell]
    m = mask.reshape(-1)
    start = torch.where(m, pool_start, in_start)
    length = torch.where(m, pool_len, in_len)
    offset = torch.zeros(num_rows * num_cols + 1, dtype=torch.long)
    torch.cumsum(length, dim=0, out=offset[1:])
    total = int(offset[-1])
    cell_of = torch.repeat_interleave(torch.arange(length.numel()), length, output_size=total)
    elem = start[cell_of] + torch.arange(total) - offset[:-1][cell_of]
    values = torch.cat([feat.values, pool_feat.values])[elem]
    return MultiNestedTensor(num_rows=num_rows, num_cols=num_cols, values=values, offset=offset)


# -- distinct values ------------------------------------------------------------------


def _cell_keys(feat) -> Tensor:
    """``[rows, cols, K]`` int64 keys, equal iff the cells hold the same value.

    Floats are compared by bit pattern after mapping every NaN to one NaN, so nulls
    form one distinct value; variable-length cells are padded and carry their length.
    """
    if isinstance(feat, MultiNestedTensor):
        num_rows, num_cols = feat.num_rows, feat.num_cols
        length = feat.offset.diff()
        width = int(length.max()) if length.numel() else 0
        keys = torch.full((num_rows * num_cols, width + 1), -2, dtype=torch.long)
        keys[:, 0] = length
        if width:
            cell_of = torch.repeat_interleave(torch.arange(length.numel()), length)
            pos = torch.arange(feat.values.numel()) - feat.offset[:-1][cell_of]
            keys[cell_of, pos + 1] = feat.values.long()
        return keys.view(num_rows, num_cols, width + 1)
    if isinstance(feat, MultiEmbeddingTensor):
        dims = feat.offset.diff()
        width = int(dims.max()) if dims.numel() else 0
        col_of = torch.repeat_interleave(torch.arange(feat.num_cols), dims)
        pos = torch.arange(feat.values.size(1)) - feat.offset[:-1][col_of]
        keys = torch.zeros(feat.num_rows, feat.num_cols, width, dtype=torch.long)
        keys[:, col_of, pos] = _float_bits(feat.values)
        return keys
    if feat.dim() == 2:
        feat = feat.unsqueeze(-1)
    return _float_bits(feat) if feat.is_floating_point() else feat.long()


def _float_bits(x: Tensor) -> Tensor:
    x = torch.where(torch.isnan(x), torch.full_like(x, float("nan")), x).to(torch.float32)
    return x.view(torch.int32).long()


def _distinct_rows(feat) -> _DistinctRows:
    """One representative pool row (the first) per distinct value of each column."""
    keys = _cell_keys(feat)  # [N, C, K]
    num_rows, num_cols = keys.shape[0], keys.shape[1]
    if num_rows == 0:
        zeros = torch.zeros(num_cols, dtype=torch.long)
        return _DistinctRows(torch.zeros(0, dtype=torch.long), zeros, zeros.clone())
    # Prefix the column id so one unique() serves all columns; groups come out sorted
    # by column, hence contiguous per column.
    col = torch.arange(num_cols).view(1, num_cols, 1).expand(num_rows, num_cols, 1)
    flat = torch.cat([col, keys], dim=2).reshape(num_rows * num_cols, -1)
    uniq, inverse = torch.unique(flat, dim=0, return_inverse=True)
    row_of = torch.arange(num_rows).repeat_interleave(num_cols)
    rows = torch.full((uniq.size(0),), num_rows, dtype=torch.long).scatter_reduce_(
        0, inverse, row_of, reduce="amin")
    count = torch.bincount(uniq[:, 0], minlength=num_cols)
    start = torch.cumsum(count, 0) - count
    return _DistinctRows(rows, start, count)
