r"""Input node vectors kept as look-ups into small tables, never one row per node.

In a temporal batch a node's input vector is its row's table-model output plus the
encoding of its seed-relative age (:mod:`relcore.models.backbone`, stages 1-2):

.. math::
    \mathbf{x}_v^{(0)} = \mathbf{R}_{r(v)} + \mathbf{T}_{\tau(v)}

with :math:`\mathbf{R}` one vector per distinct row of the batch and :math:`\mathbf{T}`
one per distinct time difference. Deep disjoint batches repeat both many times: a
3-hop rel-f1 batch has 2.5M nodes but 65k rows and 40k differences. The first
GraphSAGE layer needs, per destination :math:`v`, only the sum (or mean) of its
neighbours' inputs, which is linear in the two tables:

.. math::
    \sum_{u \in \mathcal{N}(v)} \mathbf{x}_u^{(0)}
    = \big(\mathbf{A}_R \mathbf{R} + \mathbf{A}_T \mathbf{T}\big)_v

where :math:`\mathbf{A}_R[v, k]` counts the neighbours of :math:`v` whose row is
:math:`k` (and :math:`\mathbf{A}_T` likewise; divided by the degree for the mean).
One sparse product replaces a per-node matrix and a per-edge gather and scatter, in
the forward and the backward pass.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor


@dataclass
class FactoredRows:
    """``x[v] = rows[row_of[v]] (+ times[time_of[v]])`` for the nodes of one type."""

    rows: Tensor
    row_of: Tensor
    times: Tensor | None = None
    time_of: Tensor | None = None

    def take(self, nodes: Tensor | int) -> Tensor:
        """The vectors of ``nodes`` (an index, or a count of first nodes), materialised."""
        def of(index: Tensor) -> Tensor:
            return index[:nodes] if isinstance(nodes, int) else index.index_select(0, nodes)

        x = self.rows.index_select(0, of(self.row_of))
        if self.times is not None:
            x = x + self.times.index_select(0, of(self.time_of))
        return x

    # A node type is the source of several edge types: its look-up table and each
    # node's columns in it are built once, not once per edge type.
    @cached_property
    def _table(self) -> Tensor:
        """``[R; T]`` in float32 (the CPU CSR product has no bf16 kernel)."""
        table = self.rows if self.times is None else torch.cat([self.rows, self.times], dim=0)
        return table.float()

    @cached_property
    def _columns(self) -> Tensor:
        """Per node, its column(s) in :attr:`_table`: ``[n, 1]`` or ``[n, 2]``."""
        cols = self.row_of.unsqueeze(1)
        if self.times is not None:  # one product over [R; T], two entries per edge
            cols = torch.cat([cols, self.time_of.unsqueeze(1) + self.rows.size(0)], dim=1)
        return cols

    def aggregate(self, src: Tensor, dst: Tensor, num_dst: int, aggr: str) -> Tensor:
        """Sum or mean of ``x[src]`` into ``num_dst`` destinations along edges ``src -> dst``."""
        if src.numel() == 0:
            return self.rows.new_zeros(num_dst, self.rows.size(1))
        matrix = incidence(dst, self._columns[src], num_dst, self._table.size(0), aggr)
        with torch.autocast(self._table.device.type, enabled=False):  # a bf16 autocast must not cast it
            return torch.sparse.mm(matrix, self._table)


def incidence(dst: Tensor, cols: Tensor, num_dst: int, num_cols: int, aggr: str) -> Tensor:
    """CSR matrix ``[num_dst, num_cols]`` with, per edge ``e``, a 1 (sum) or ``1/deg``
    (mean) at ``(dst[e], cols[e, j])`` for every column ``j`` of ``cols``."""
    order = torch.argsort(dst, stable=True)  # stable: the same matrix, hence the same sums, every time
    deg = torch.bincount(dst, minlength=num_dst)
    per_edge = cols.size(1)
    crow = torch.zeros(num_dst + 1, dtype=torch.long, device=dst.device)
    crow[1:] = (deg * per_edge).cumsum(0)
    if aggr == "sum":
        values = torch.ones(dst.numel() * per_edge, device=dst.device)
    elif aggr == "mean":
        values = (1.0 / deg.clamp(min=1).to(torch.float32))[dst[order]].repeat_interleave(per_edge)
    else:
        raise ValueError(f"aggr must be sum or mean, got {aggr!r}")
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols[order].reshape(-1), values, size=(num_dst, num_cols))
