r"""Which rows each GraphSAGE layer computes, and from which of the previous layer's rows.

A layer :math:`l` of the backbone maps the previous layer's rows
:math:`\mathbf{X}^{(l-1)}` to its own :math:`\mathbf{X}^{(l)}`; a :class:`Layer` says, per
node type, which previous row is each output's own (*root*) input and, per edge type,
which previous rows are summed (or averaged) into which outputs. Three plans of the same
batch give the same seed outputs:

- :func:`full_plan`: every node at every layer (any batch);
- :func:`trimmed_plan`: a temporal batch laid out hop by hop only needs hop-:math:`h`
  nodes while :math:`h < L - l` (PyG's ``trim_to_layer``);
- :func:`shared_plan`: on top of trimming, each distinct computation once.

Sharing is exact. In a disjoint temporal batch a node's input depends only on its row and
its seed time (the temporal encoding reads :math:`t_{\text{seed}} - t_v`), so two nodes
compute the same vector at every layer when they agree on a key refined layer by layer,
as in the Weisfeiler-Lehman test:

.. math::
    k^{(0)}_v = (t_{\text{seed}(v)}, r_v), \qquad
    k^{(l)}_v = \big(k^{(l-1)}_v,\; \{\!\{ (\psi, k^{(l-1)}_u) : u \in \mathcal{N}_\psi(v) \}\!\}\big)

Layer :math:`l` is then computed once per distinct :math:`k^{(l)}`, from one
representative node's edges, and every occurrence reads that row. Seeds of one timestamp
reach the same races, results and standings, so batches drawn a few timestamps at a time
(``--batch-order time``) repeat most keys.

The neighbour multiset is compared through its size and two sums, modulo
:math:`p = 2^{31} - 1`, of random 31-bit codes of its members (one code table per edge
type and layer): two different multisets of the same size collide with probability about
:math:`(2/2^{31})^2 = 2^{-60}`. A batch in which too few first-layer edges lead into nodes
whose (seed time, row) repeats (``MIN_REPEATED_EDGES``) keeps the trimmed plan: building
the shared one would cost more than it saves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

EdgeType = tuple[str, str, str]
# Codes are below 2**31, so a sum over fewer than 2**32 neighbours stays exact in int64;
# sums are compared modulo a prime so that two of them fit one int64.
CODE_BITS = 31
CODE_PRIME = 2 ** 31 - 1
# Sharing pays for building its plan when at least this share of the first layer's edges
# lead into nodes whose (seed time, row) already occurred: an upper bound on the edges it
# saves (measured with sweeps/bench/bench_shared.py, results in shared.md).
MIN_REPEATED_EDGES = 0.25


@dataclass
class Layer:
    """One layer: ``num_out[t]`` output rows per node type.

    ``root[t]``: each output's own row in the previous layer, as an index, or ``n`` for
    the first ``n`` rows. ``edges[et]``: ``[2, E]``, previous-layer rows of the source type
    -> output rows of the destination type. Edge types absent from ``edges`` do not
    contribute; present ones do even when empty (their bias, as in ``HeteroConv``).
    """

    num_out: dict[str, int]
    root: dict[str, Tensor | int]
    edges: dict[EdgeType, Tensor]


@dataclass
class Plan:
    """What a batch's message passing computes.

    ``inputs[t]``: the nodes whose input vectors (table model + temporal encoding) layer 1
    reads, or ``None`` for all nodes in order. ``out[t]``: the last layer's row of each
    node the backbone returns, as an index or a count of first rows.
    """

    inputs: dict[str, Tensor | None]
    layers: list[Layer]
    out: dict[str, Tensor | int]


def full_plan(num_nodes: dict[str, int], edges: dict[EdgeType, Tensor], num_layers: int) -> Plan:
    """Every node at every layer: each layer reads and writes rows in node order."""
    layer = Layer(dict(num_nodes), dict(num_nodes), dict(edges))
    return Plan({t: None for t in num_nodes}, [layer] * num_layers, dict(num_nodes))


def trimmed_plan(num_sampled_nodes: dict[str, list[int]], num_sampled_edges: dict[EdgeType, list[int]],
                 edges: dict[EdgeType, Tensor], num_layers: int) -> Plan:
    """Layer :math:`l` of :math:`L` computes hops :math:`< L - l` from those hops' edges.

    Nodes are laid out hop by hop and the edges of hop :math:`h` point into hop-:math:`h`
    nodes, so every layer's rows are a prefix of the previous one's.
    """
    layers = []
    for layer in range(num_layers):
        keep = num_layers - layer
        n_keep = {t: sum(counts[:keep]) for t, counts in num_sampled_nodes.items()}
        kept = {et: ei[:, :sum(num_sampled_edges[et][:keep])] for et, ei in edges.items()}
        layers.append(Layer(n_keep, dict(n_keep), kept))
    return Plan({t: None for t in num_sampled_nodes}, layers, dict(layers[-1].num_out))


def shared_plan(row: dict[str, Tensor], seed_time: dict[str, Tensor], num_sampled_nodes: dict[str, list[int]],
                num_sampled_edges: dict[EdgeType, list[int]], edges: dict[EdgeType, Tensor],
                num_layers: int, seed: int = 0) -> Plan:
    r"""The trimmed plan with each distinct key :math:`k^{(l)}` computed once per layer.

    Args:
        row: per node type, each node's row in its table (``n_id``).
        seed_time: per node type, each node's seed time.
        num_sampled_nodes, num_sampled_edges, edges: the batch's hop layout and edges.
        num_layers: GraphSAGE layers.
        seed: seeds the random codes; any seed gives the same outputs.
    """
    trimmed = trimmed_plan(num_sampled_nodes, num_sampled_edges, edges, num_layers)
    if not trimmed.layers:
        return trimmed
    own = {t: _rank(_input_key(seed_time[t][:n], row[t][:n])) for t, n in trimmed.layers[0].num_out.items()}
    if not _worth_sharing(own, trimmed.layers[0].edges):
        return trimmed
    gen = torch.Generator().manual_seed(seed)
    # An edge joins two nodes of one seed, so a neighbour's layer-0 key is its row once
    # the destination's own key holds the seed time.
    src_key = dict(row)
    cls: dict[str, Tensor] | None = None  # node -> its row in the previous layer's output
    layers: list[Layer] = []
    for plain in trimmed.layers:
        codes = {et: torch.randint(0, 2 ** CODE_BITS, (_size(src_key[et[0]]), 2), generator=gen)
                 for et in plain.edges}
        key = {t: _refine(own[t] if cls is None else cls[t][:n], t, plain, src_key, codes)
               for t, n in plain.num_out.items()}
        layers.append(_share(plain, key, cls))
        cls = src_key = key
    return Plan(_compact_inputs(layers[0], row, seed_time), layers, cls)


def _refine(own: Tensor, t: str, plain: Layer, src_key: dict[str, Tensor],
            codes: dict[EdgeType, Tensor]) -> Tensor:
    """:math:`k^{(l)}` of the outputs of type ``t``: their own key, degree and the two code
    sums of their neighbours' keys, as dense ranks."""
    n = plain.num_out[t]
    deg = torch.zeros(n, dtype=torch.long)
    sums = torch.zeros(n, 2, dtype=torch.long)
    for et, (src, dst) in plain.edges.items():
        if et[2] == t and dst.numel():
            deg += torch.bincount(dst, minlength=n)
            sums.index_add_(0, dst, codes[et].index_select(0, src_key[et[0]].index_select(0, src)))
    sums = sums % CODE_PRIME
    return _rank(_pair(_pair(own, deg), _rank(sums[:, 0] * CODE_PRIME + sums[:, 1])))


def _share(plain: Layer, key: dict[str, Tensor], prev: dict[str, Tensor] | None) -> Layer:
    """``plain`` computed once per distinct key, from its first node's root and edges.

    ``prev`` maps nodes to the previous layer's rows (``None`` before the first layer, whose
    reads are still nodes).
    """
    rep = {t: _first_of(k) for t, k in key.items()}
    root = {t: r if prev is None else prev[t].index_select(0, r) for t, r in rep.items()}
    edges = {}
    for et, (src, dst) in plain.edges.items():
        is_rep = torch.zeros(plain.num_out[et[2]], dtype=torch.bool).index_fill_(0, rep[et[2]], True)
        kept = is_rep.index_select(0, dst)
        src, dst = src[kept], dst[kept]
        edges[et] = torch.stack([src if prev is None else prev[et[0]].index_select(0, src),
                                 key[et[2]].index_select(0, dst)])
    return Layer({t: _size(k) for t, k in key.items()}, root, edges)


def _worth_sharing(own: dict[str, Tensor], edges: dict[EdgeType, Tensor]) -> bool:
    """Whether at least ``MIN_REPEATED_EDGES`` of the first layer's edges lead into a node
    whose own key an earlier node already has: an upper bound on the edges sharing saves."""
    if all(_size(k) == k.numel() for k in own.values()):
        return False
    repeated = {t: _first_of(k).index_select(0, k) != torch.arange(k.numel()) for t, k in own.items()}
    saved = sum(int(repeated[et[2]].index_select(0, dst).sum()) for et, (_, dst) in edges.items())
    return saved >= MIN_REPEATED_EDGES * sum(e.size(1) for e in edges.values())


def _compact_inputs(first: Layer, row: dict[str, Tensor], seed_time: dict[str, Tensor]) -> dict[str, Tensor]:
    """Renumber the first layer's reads to one input per distinct (seed time, row) they
    read; return each input's representative node per type."""
    reads: dict[str, list[tuple[EdgeType | None, Tensor]]] = {t: [(None, r)] for t, r in first.root.items()}
    for et, ei in first.edges.items():
        reads.setdefault(et[0], []).append((et, ei[0]))
    inputs = {}
    for t in row:
        nodes = torch.cat([r for _, r in reads.get(t, [])]) if t in reads else torch.empty(0, dtype=torch.long)
        inverse = _rank(_input_key(seed_time[t].index_select(0, nodes), row[t].index_select(0, nodes)))
        inputs[t] = _first_of(inverse, nodes)
        for (et, _), part in zip(reads.get(t, []), inverse.split([r.numel() for _, r in reads.get(t, [])])):
            if et is None:
                first.root[t] = part
            else:
                first.edges[et] = torch.stack([part, first.edges[et][1]])
    return inputs


def _input_key(seed_time: Tensor, row: Tensor) -> Tensor:
    """One int64 per (seed time, row), ordered as the pairs."""
    if not row.numel():
        return row
    return (seed_time - seed_time.min()) * (int(row.max()) + 1) + row


def _first_of(key: Tensor, index: Tensor | None = None) -> Tensor:
    """Per dense key, the smallest ``index`` (default: position) holding it."""
    index = torch.arange(key.numel()) if index is None else index
    return torch.full((_size(key),), 2 ** 62, dtype=torch.long).scatter_reduce_(0, key, index, "amin")


def _pair(a: Tensor, b: Tensor) -> Tensor:
    """One int64 per pair of non-negative ints, ordered as the pairs."""
    if not b.numel():
        return a
    a_max, b_max = int(a.max()), int(b.max())
    if (a_max + 1) * (b_max + 1) >= 2 ** 63:
        a = _rank(a)  # dense ranks are below the number of nodes: the product then fits
    return a * (b_max + 1) + b


def _size(key: Tensor) -> int:
    """Number of distinct dense ranks (or rows) in ``key``."""
    return int(key.max()) + 1 if key.numel() else 0


def _rank(x: Tensor) -> Tensor:
    """Dense rank of each value (equal values, equal ranks)."""
    return torch.unique(x, return_inverse=True)[1] if x.numel() else x
