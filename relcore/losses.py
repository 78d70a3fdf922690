r"""The task-agnostic contrastive objective (Peleška & Šír 2025, Eqs. 1-6).

Notation: :math:`\mathbf{h}_v` is the backbone embedding of node :math:`v` in the clean
subgraph, :math:`\hat{\mathbf{h}}_v` its embedding in the corrupted view (same nodes,
same order), :math:`\phi(v)` a node's type (table), :math:`\psi` an edge type, and
:math:`\mathcal{N}_v` a set of at most :math:`N_{\max}` negatives.

Every term is an InfoNCE cross-entropy :math:`\log(e^{s^+} + \sum_{n} e^{s_n}) - s^+`
computed with ``logsumexp``/``logaddexp`` on a dense score matrix (never a raw
``exp``): negatives are gathered by index, or selected by a mask whose other entries
are :math:`-\infty`. There is no Python loop over nodes or edges, only over node/edge
types. Each per-term function returns ``(loss, num_negatives)`` per row;
:func:`combined_loss` applies the :math:`\mu` normalisation of Eq. 5 and the means of
Eq. 6.

Negative subsampling (at most :math:`N_{\max}`) draws, for each row, a uniformly random
subset of its candidates; rows share one random permutation (rotated per row), which
keeps sampling to a few integer ops per score instead of a top-k over random keys.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

N_MAX = 256

EdgeType = tuple[str, str, str]
Term = tuple[Tensor, Tensor]  # (loss per row, number of negatives per row)


# -- helpers ------------------------------------------------------------------------


def _random_rotations(rows: int, n: int, generator: torch.Generator | None, device) -> Tensor:
    """``[rows, n]``: row ``r`` is one uniformly random permutation of ``0..n-1`` rotated by
    a random offset -- each row a uniformly random order, rows decorrelated, built from
    one ``randperm`` instead of ``rows`` of them."""
    perm = torch.randperm(n, generator=generator).to(device)
    offset = torch.randint(n, (rows, 1), generator=generator).to(device)
    return torch.cat([perm, perm])[offset + torch.arange(n, device=device)]


def subsample_mask(valid: Tensor, n_max: int | None, generator: torch.Generator | None = None) -> Tensor:
    """Keep at most ``n_max`` ``True`` entries per row of ``valid``, uniformly at random.

    Rows with at most ``n_max`` candidates are kept whole; the others keep the first
    ``n_max`` valid entries in a uniformly random order of the columns, i.e. a
    uniformly random ``n_max``-subset (a cumulative sum, ~3x cheaper than top-k of
    random keys).
    """
    if n_max is None or valid.numel() == 0:
        return valid
    if int(valid.sum(dim=1).max()) <= n_max:
        return valid
    order = _random_rotations(valid.size(0), valid.size(1), generator, valid.device)
    v = valid.gather(1, order)
    keep = v & (v.cumsum(dim=1) <= n_max)
    return torch.zeros_like(valid).scatter_(1, order, keep)


def others_sample(n: int, k: int, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> Tensor:
    """``[n, k]`` indices: for each ``i``, ``k`` distinct indices other than ``i`` (``k < n``).

    Row ``i`` holds the ``k`` successors of ``i`` in one uniformly random cyclic order
    of ``0..n-1``, which for every ``i`` is a uniformly random ``k``-subset of the
    others -- without the ``[n, n]`` random keys a per-row draw would need.
    """
    perm = torch.randperm(n, generator=generator).to(device)
    pos = torch.empty_like(perm)
    pos[perm] = torch.arange(n, device=perm.device)
    return torch.cat([perm, perm])[pos.unsqueeze(1) + torch.arange(1, k + 1, device=perm.device)]


def masked_logsumexp(logits: Tensor, mask: Tensor) -> Tensor:
    r""":math:`\log \sum_{c:\, m_{r,c}} e^{s_{r,c}}` per row, :math:`-\infty` for an empty row.

    Masked entries are set to :math:`-\infty`; empty rows are computed on zeros and
    replaced afterwards, so their gradient is exactly 0 rather than NaN.
    """
    filled = logits.masked_fill(~mask, float("-inf"))
    empty = ~mask.any(dim=1)
    if not bool(empty.any()):
        return torch.logsumexp(filled, dim=1)
    filled = filled.masked_fill(empty.unsqueeze(1), 0.0)
    return torch.where(empty, float("-inf"), torch.logsumexp(filled, dim=1))


def nce_from_logsumexp(pos_logit: Tensor, neg_lse: Tensor) -> Tensor:
    r""":math:`-\log \operatorname{softmax}` of the positive given the negatives' logsumexp:
    :math:`\ell = \log(e^{s^+} + e^{\mathrm{LSE}^-}) - s^+` (0 when there are no negatives)."""
    return torch.logaddexp(pos_logit, neg_lse) - pos_logit


def all_pairs_nce(logits: Tensor, n_max: int | None, generator: torch.Generator | None = None) -> Term:
    r"""InfoNCE on a square score matrix whose positives are on the diagonal and whose
    negatives are all off-diagonal entries of the row, at most ``n_max`` of them.

    .. math::
        \ell_v = -s_{v,v} + \log\Big(e^{s_{v,v}} + \sum_{u \in \mathcal{N}_v} e^{s_{v,u}}\Big)
    """
    n = logits.size(0)
    diag = logits.diagonal()
    if n_max is None or n - 1 <= n_max:
        # every row is a full softmax over all candidates: no mask needed
        loss = torch.logsumexp(logits, dim=1) - diag if n else diag.clone()
        return loss, torch.full((n,), max(n - 1, 0), dtype=torch.long, device=logits.device)
    neg = logits.gather(1, others_sample(n, n_max, generator, logits.device))
    loss = torch.logsumexp(torch.cat([diag.unsqueeze(1), neg], dim=1), dim=1) - diag
    return loss, torch.full((n,), n_max, dtype=torch.long, device=logits.device)


def mu(n: Tensor | int | float) -> Tensor | float:
    r"""Eq. 5, the loss of a term at chance: :math:`\mu(N) = \log(N + 1)`.

    :math:`N` is the number of negatives, so :math:`N + 1` candidates; a uniform
    prediction has cross-entropy exactly :math:`\log(N+1)`, hence
    :math:`\ell / \mu(N) = 1` at chance for every :math:`N`.
    """
    if isinstance(n, Tensor):
        return torch.log1p(n.to(torch.get_default_dtype()))
    return math.log1p(n)


# -- Eq. 1 --------------------------------------------------------------------------


def row_loss(h: Tensor, h_hat: Tensor, weight: Tensor, n_max: int | None = N_MAX,
             generator: torch.Generator | None = None) -> Term:
    r"""Eq. 1, row (attribute) contrast for one node type :math:`\phi`.

    .. math::
        \ell_{\text{row}, v} = -\log \frac{\exp(\hat{\mathbf{h}}_v^\top \mathbf{W}_\phi \mathbf{h}_v)}
        {\sum_{u \in \{v\} \cup \mathcal{N}_v} \exp(\hat{\mathbf{h}}_u^\top \mathbf{W}_\phi \mathbf{h}_v)}

    with :math:`\mathcal{N}_v` the other corrupted rows of type :math:`\phi` in the
    batch, at most ``n_max`` of them (uniform subsample).

    Args:
        h: ``[n, d]`` clean embeddings.
        h_hat: ``[n, d]`` corrupted-view embeddings of the same nodes.
        weight: ``[d, d]`` :math:`\mathbf{W}_\phi`.

    Returns:
        ``(loss [n], num_negatives [n])``.
    """
    # logits[v, u] = ĥ_u^T W h_v = (W h_v) · ĥ_u
    return all_pairs_nce((h @ weight.T) @ h_hat.T, n_max, generator)


# -- Eq. 2 --------------------------------------------------------------------------


def link_loss(h_src: Tensor, h_dst: Tensor, edge_index: Tensor, weight: Tensor, n_max: int | None = N_MAX,
              generator: torch.Generator | None = None, max_edges: int | None = None) -> Term:
    r"""Eq. 2, link contrast for one edge type :math:`\psi = (\phi_u, \cdot, \phi_v)`.

    For each edge :math:`u \to v` of type :math:`\psi` in the batch:

    .. math::
        \ell_{\text{link}, (u,v)} = -\log \frac{\exp(\mathbf{h}_u^\top \mathbf{W}_\psi \mathbf{h}_v)}
        {\sum_{w \in \{u\} \cup \mathcal{N}_{v}} \exp(\mathbf{h}_w^\top \mathbf{W}_\psi \mathbf{h}_v)}

    with :math:`\mathcal{N}_v` the batch nodes of type :math:`\phi_u` that have no
    :math:`\psi`-edge to :math:`v`, at most ``n_max`` of them. The negatives depend on
    :math:`v` only, so they are drawn once per destination and shared by its edges,
    and the score matrix is ``[n_dst, n_src]`` rather than ``[E, n_src]`` (a race
    with 25 results costs one row, not 25).

    Args:
        h_src: ``[n_src, d]`` clean embeddings of the source type.
        h_dst: ``[n_dst, d]`` clean embeddings of the destination type.
        edge_index: ``[2, E]`` local (src, dst) indices; all of them define
            "linked", and every edge (or ``max_edges`` random ones) is a term.
        weight: ``[d, d]`` :math:`\mathbf{W}_\psi`.

    Returns:
        ``(loss [E'], num_negatives [E'])`` for the (kept) edges in order.
    """
    src, dst = edge_index
    n_src, n_dst = h_src.size(0), h_dst.size(0)
    linked = torch.zeros(n_dst, n_src, dtype=torch.bool, device=h_src.device)
    linked[dst, src] = True
    if max_edges is not None and src.numel() > max_edges:
        keep = torch.randperm(src.numel(), generator=generator)[:max_edges].to(src.device)
        src, dst = src[keep], dst[keep]
    # logits[v, w] = h_w^T W h_v; W goes onto the smaller side (rev edges reach many
    # child rows from a few parent rows)
    if n_dst <= n_src:
        logits = (h_dst @ weight.T) @ h_src.T
    else:
        logits = h_dst @ (h_src @ weight).T
    neg = subsample_mask(~linked, n_max, generator)
    neg_lse = masked_logsumexp(logits, neg)  # [n_dst]
    pos = logits[dst, src]  # h_u^T W h_v per edge
    return nce_from_logsumexp(pos, neg_lse[dst]), neg.sum(dim=1)[dst]


# -- Eqs. 3-4 -----------------------------------------------------------------------


def context_vectors(h_dict: Mapping[str, Tensor], edge_index_dict: Mapping[EdgeType, Tensor],
                    weight_dict: Mapping[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
    r"""Eq. 3, each node's context: the mean of its projected in-neighbours.

    .. math::
        \mathbf{c}_v = \frac{1}{|\mathcal{N}^{\text{in}}(v)|} \sum_{u \in \mathcal{N}^{\text{in}}(v)}
        \mathbf{W}'_{\phi(u)} \mathbf{h}_u

    over incoming edges of every edge type (a neighbour reached by two edge types
    counts twice).

    Returns:
        ``{node_type: (c [n, d], has_context [n] bool)}``; nodes without incoming
        edges have ``c = 0`` and ``has_context = False``.
    """
    proj: dict[str, Tensor] = {}
    sums: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}
    for (src_t, _, dst_t), ei in edge_index_dict.items():
        if src_t not in h_dict or dst_t not in h_dict:
            continue
        if src_t not in proj:
            proj[src_t] = h_dict[src_t] @ weight_dict[src_t].T
        h_dst = h_dict[dst_t]
        msg = proj[src_t].index_select(0, ei[0])
        prev = sums.get(dst_t, h_dst.new_zeros(h_dst.shape))
        sums[dst_t] = prev.index_add(0, ei[1], msg)
        counts[dst_t] = counts.get(dst_t, 0) + torch.bincount(ei[1], minlength=h_dst.size(0))
    out = {}
    for t, h in h_dict.items():
        if t in sums:
            cnt = counts[t]
            out[t] = (sums[t] / cnt.clamp(min=1).unsqueeze(1).to(h.dtype), cnt > 0)
        else:
            out[t] = (h.new_zeros(h.shape), torch.zeros(h.size(0), dtype=torch.bool, device=h.device))
    return out


def context_loss(h: Tensor, c: Tensor, has_context: Tensor, n_max: int | None = N_MAX,
                 generator: torch.Generator | None = None) -> Term:
    r"""Eq. 4, context contrast for one node type :math:`\phi`.

    .. math::
        \ell_{\text{ctx}, v} = -\log \frac{\exp(\mathbf{c}_v^\top \mathbf{h}_v)}
        {\sum_{u \in \{v\} \cup \mathcal{N}_v} \exp(\mathbf{c}_u^\top \mathbf{h}_v)}

    over nodes :math:`v` of type :math:`\phi` with a context (Eq. 3), negatives
    :math:`\mathcal{N}_v` = the other nodes of type :math:`\phi` with a context, at
    most ``n_max``.

    Returns:
        ``(loss, num_negatives)`` for the nodes with a context, in node order.
    """
    idx = has_context.nonzero().view(-1)
    # logits[v, u] = c_u^T h_v
    return all_pairs_nce(h.index_select(0, idx) @ c.index_select(0, idx).T, n_max, generator)


# -- Eqs. 5-6 -----------------------------------------------------------------------


@dataclass
class ContrastiveLoss:
    """Eq. 6's total and its three normalised terms (None when a term had no instance
    with at least one negative), plus how many instances each term averaged."""

    total: Tensor
    row: Tensor | None
    link: Tensor | None
    context: Tensor | None
    num_row: int = 0
    num_link: int = 0
    num_context: int = 0

    def as_dict(self) -> dict[str, float]:
        """Floats for logging; a missing term is NaN."""
        f = lambda t: float("nan") if t is None else float(t.detach())  # noqa: E731
        return {"loss": f(self.total), "row": f(self.row), "link": f(self.link), "context": f(self.context),
                "num_row": self.num_row, "num_link": self.num_link, "num_context": self.num_context}


def normalised_mean(terms: Iterable[Term]) -> tuple[Tensor | None, int]:
    r""":math:`\operatorname{mean}_i \ell_i / \mu(N_i)` over instances with :math:`N_i > 0`
    (pooled over all types); ``(None, 0)`` when there is none."""
    terms = list(terms)
    if not terms:
        return None, 0
    loss = torch.cat([t[0] for t in terms])
    n = torch.cat([t[1] for t in terms])
    keep = n > 0
    count = int(keep.sum())
    if count == 0:
        return None, 0
    return (loss[keep] / mu(n[keep])).mean(), count


def combined_loss(row_terms: Iterable[Term], link_terms: Iterable[Term],
                  context_terms: Iterable[Term]) -> ContrastiveLoss:
    r"""Eq. 6, the sum of the three :math:`\mu`-normalised means.

    .. math::
        \mathcal{L} = \operatorname*{mean}_v \frac{\ell_{\text{row},v}}{\mu(N_v)}
        + \operatorname*{mean}_{e} \frac{\ell_{\text{link},e}}{\mu(N_e)}
        + \operatorname*{mean}_v \frac{\ell_{\text{ctx},v}}{\mu(N_v)}

    Each mean pools all node (edge) types; instances with :math:`N = 0` (hence
    :math:`\mu = 0`) are left out, and a term with no instance left is left out of
    the sum (reported as None).
    """
    row_terms, link_terms, context_terms = list(row_terms), list(link_terms), list(context_terms)
    row, n_row = normalised_mean(row_terms)
    link, n_link = normalised_mean(link_terms)
    ctx, n_ctx = normalised_mean(context_terms)
    parts = [t for t in (row, link, ctx) if t is not None]
    if parts:
        total = torch.stack(parts).sum()
    else:
        # Nothing to learn from; keep the graph connected so backward() still works.
        losses = [t[0] for t in row_terms + link_terms + context_terms]
        total = torch.cat(losses).sum() * 0.0 if losses else torch.zeros(())
    return ContrastiveLoss(total, row, link, ctx, n_row, n_link, n_ctx)


# -- the module ---------------------------------------------------------------------


def edge_key(edge_type: EdgeType) -> str:
    return "__".join(edge_type)


class ContrastiveObjective(torch.nn.Module):
    r"""The learnable part of the objective and Eq. 6 on a batch.

    Holds :math:`\mathbf{W}_\phi` (Eq. 1) and :math:`\mathbf{W}'_\phi` (Eq. 3) per
    node type and :math:`\mathbf{W}_\psi` (Eq. 2) per edge type, all :math:`d \times d`,
    initialised to :math:`\mathbf{I}/\sqrt{d}`: a positive pair starts out favoured
    when :math:`\hat{\mathbf{h}} \approx \mathbf{h}`, and the :math:`1/\sqrt{d}`
    (attention's scaling) keeps the initial logits of LayerNorm-ed embeddings
    :math:`O(1)` instead of :math:`O(d)`, so the softmax does not start saturated.

    Args:
        node_types, edge_types: the graph's types.
        channels: :math:`d`.
        n_max: :math:`N_{\max}`, most negatives per term.
        max_edges: most edges per edge type used as link terms (None = all).
        terms: which of ``"row"``, ``"link"``, ``"context"`` to compute.
    """

    def __init__(self, node_types: Iterable[str], edge_types: Iterable[EdgeType], channels: int = 128,
                 n_max: int | None = N_MAX, max_edges: int | None = None,
                 terms: Iterable[str] = ("row", "link", "context")):
        super().__init__()
        node_types, edge_types = list(node_types), [tuple(et) for et in edge_types]
        self.terms = tuple(terms)
        unknown = set(self.terms) - {"row", "link", "context"}
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}")
        self.n_max, self.max_edges, self.channels = n_max, max_edges, channels
        self.edge_types = edge_types

        def init() -> torch.nn.Parameter:
            return torch.nn.Parameter(torch.eye(channels) / math.sqrt(channels))

        self.row_weight = torch.nn.ParameterDict({t: init() for t in node_types})
        self.link_weight = torch.nn.ParameterDict({edge_key(et): init() for et in edge_types})
        self.context_weight = torch.nn.ParameterDict({t: init() for t in node_types})

    def forward(self, h: Mapping[str, Tensor], h_hat: Mapping[str, Tensor], batch,
                generator: torch.Generator | None = None) -> ContrastiveLoss:
        """Eq. 6 for backbone outputs ``h`` (clean) and ``h_hat`` (corrupted) on ``batch``.

        ``batch`` supplies ``batch[et].edge_index`` (local indices); a mapping
        ``{edge_type: edge_index}`` works too.
        """
        if isinstance(batch, Mapping):
            edge_index_dict = {tuple(et): ei for et, ei in batch.items()}
        else:
            edge_index_dict = {et: batch[et].edge_index for et in batch.edge_types if "edge_index" in batch[et]}
        edge_index_dict = {et: ei for et, ei in edge_index_dict.items()
                           if edge_key(et) in self.link_weight and et[0] in h and et[2] in h}

        row_terms: list[Term] = []
        if "row" in self.terms:
            for t, ht in h.items():
                if t in self.row_weight and ht.size(0) > 1:
                    row_terms.append(row_loss(ht, h_hat[t], self.row_weight[t], self.n_max, generator))

        link_terms: list[Term] = []
        if "link" in self.terms:
            for et, ei in edge_index_dict.items():
                if ei.size(1) > 0:
                    link_terms.append(link_loss(h[et[0]], h[et[2]], ei, self.link_weight[edge_key(et)],
                                                self.n_max, generator, self.max_edges))

        context_terms: list[Term] = []
        if "context" in self.terms:
            weights = {t: w for t, w in self.context_weight.items()}
            for t, (c, has) in context_vectors(h, edge_index_dict, weights).items():
                if int(has.sum()) > 1:
                    context_terms.append(context_loss(h[t], c, has, self.n_max, generator))

        return combined_loss(row_terms, link_terms, context_terms)
