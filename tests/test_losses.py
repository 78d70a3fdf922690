"""The contrastive objective, Eqs. 1-6, against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch_geometric.data import HeteroData

from relcore.losses import (
    ContrastiveObjective,
    combined_loss,
    context_loss,
    context_vectors,
    link_loss,
    masked_logsumexp,
    mu,
    others_sample,
    row_loss,
    subsample_mask,
)


def neg_log_softmax(scores: list[float], pos: int) -> float:
    s = np.asarray(scores, dtype=np.float64)
    return float(-(s[pos] - np.log(np.exp(s).sum())))


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def val(x: torch.Tensor) -> float:
    return float(x.detach())


# -- Eq. 5 ------------------------------------------------------------------------------


def test_mu():
    assert mu(0) == 0.0
    assert mu(1) == pytest.approx(math.log(2))
    assert mu(255) == pytest.approx(math.log(256))
    assert torch.allclose(mu(torch.tensor([0, 3, 9])), t([0.0, math.log(4), math.log(10)]))


# -- Eq. 1 ------------------------------------------------------------------------------


def test_row_loss_by_hand():
    h = t([[1.0, 0.0], [0.5, -1.0], [2.0, 1.0]])
    h_hat = t([[0.8, 0.1], [0.0, -1.0], [1.0, 1.5]])
    W = t([[1.0, 0.5], [-0.3, 2.0]])
    loss, n = row_loss(h, h_hat, W, n_max=None)
    Wn, hn, hhn = W.double().numpy(), h.double().numpy(), h_hat.double().numpy()
    expected = [neg_log_softmax([hhn[u] @ Wn @ hn[v] for u in range(3)], v) for v in range(3)]
    assert np.allclose(loss.double().numpy(), expected, atol=1e-5)
    assert n.tolist() == [2, 2, 2]


def test_row_loss_respects_n_max():
    g = torch.Generator().manual_seed(0)
    h = torch.zeros(50, 4)  # all logits 0: loss = log(#candidates) exactly
    loss, n = row_loss(h, h.clone(), torch.eye(4), n_max=7, generator=g)
    assert n.tolist() == [7] * 50
    assert torch.allclose(loss, torch.full((50,), math.log(8)))
    loss, n = row_loss(h[:5], h[:5].clone(), torch.eye(4), n_max=7)
    assert n.tolist() == [4] * 5 and torch.allclose(loss, torch.full((5,), math.log(5)))


def test_others_sample_distinct_excludes_self_and_uniform():
    g = torch.Generator().manual_seed(1)
    counts = torch.zeros(10, 10)
    for _ in range(400):
        idx = others_sample(10, 3, g)
        assert idx.shape == (10, 3)
        assert not (idx == torch.arange(10).unsqueeze(1)).any()
        assert all(len(set(r)) == 3 for r in idx.tolist())
        counts.scatter_add_(1, idx, torch.ones(10, 3))
    off = counts[~torch.eye(10, dtype=torch.bool)]
    assert abs(float(off.mean()) - 400 * 3 / 9) < 1 and float(off.min()) > 90  # expected ~133 each


def test_subsample_mask():
    g = torch.Generator().manual_seed(2)
    valid = torch.rand(40, 300, generator=g) < 0.5
    valid[0] = False
    valid[1, :5] = True
    valid[1, 5:] = False
    counts = torch.zeros(300)
    for _ in range(200):
        keep = subsample_mask(valid, 16, g)
        assert not (keep & ~valid).any()
        per_row = keep.sum(1)
        assert per_row[0] == 0 and per_row[1] == 5  # rows with <= n_max are kept whole
        assert torch.equal(per_row[2:], valid[2:].sum(1).clamp(max=16))
        counts += keep[2].float()
    # uniform over row 2's valid columns
    freq = counts[valid[2]] / 200
    assert abs(float(freq.mean()) - 16 / int(valid[2].sum())) < 0.01 and float(freq.min()) > 0


# -- Eq. 2 ------------------------------------------------------------------------------


def test_link_loss_by_hand():
    h_src = t([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    h_dst = t([[0.5, -0.5], [2.0, 0.3]])
    W = t([[0.7, -0.2], [0.4, 1.1]])
    # edges 0->0, 1->0, 2->1: v=0 is linked to {0, 1}, v=1 to {2}
    ei = torch.tensor([[0, 1, 2], [0, 0, 1]])
    loss, n = link_loss(h_src, h_dst, ei, W, n_max=None)
    s = lambda w, v: float(h_src[w].double() @ W.double() @ h_dst[v].double())  # noqa: E731
    expected = [
        neg_log_softmax([s(0, 0), s(2, 0)], 0),  # u=0 vs unlinked {2}
        neg_log_softmax([s(1, 0), s(2, 0)], 0),  # u=1 vs unlinked {2}
        neg_log_softmax([s(2, 1), s(0, 1), s(1, 1)], 0),  # u=2 vs unlinked {0, 1}
    ]
    assert np.allclose(loss.double().numpy(), expected, atol=1e-5)
    assert n.tolist() == [1, 1, 2]


def test_link_loss_n_max_and_no_negatives():
    g = torch.Generator().manual_seed(3)
    h_src, h_dst = torch.zeros(100, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    # dst 0 linked to 1 source (99 unlinked), dst 1 linked to every source (no negatives)
    ei = torch.cat([torch.tensor([[0], [0]]), torch.stack([torch.arange(100), torch.ones(100, dtype=torch.long)])],
                   dim=1)
    loss, n = link_loss(h_src, h_dst, ei, torch.eye(4), n_max=10, generator=g)
    assert n[0] == 10 and (n[1:] == 0).all()
    assert val(loss[0]) == pytest.approx(math.log(11), abs=1e-5)  # zero embeddings: chance
    assert torch.allclose(loss[1:], torch.zeros(100))
    loss.sum().backward()
    assert torch.isfinite(h_src.grad).all() and torch.isfinite(h_dst.grad).all()


def test_link_loss_max_edges():
    h = torch.randn(30, 4)
    ei = torch.stack([torch.arange(30), torch.arange(30) % 3])
    loss, n = link_loss(h, h[:3], ei, torch.eye(4), max_edges=7, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (7,) and n.shape == (7,)


def test_masked_logsumexp_empty_rows_no_nan():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    out = masked_logsumexp(x, mask)
    assert val(out[0]) == pytest.approx(math.log(math.e + math.e ** 3))
    assert out[1] == float("-inf")
    out[0].backward()
    assert torch.isfinite(x.grad).all() and x.grad[1].abs().sum() == 0


# -- Eqs. 3-4 ---------------------------------------------------------------------------


def test_context_by_hand():
    # types a (3 nodes) and b (2 nodes); edges a->b and b->a
    h = {"a": t([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), "b": t([[0.5, 0.5], [-1.0, 2.0]])}
    Wp = {"a": t([[1.0, 0.2], [0.0, 0.5]]), "b": t([[0.3, 0.0], [1.0, -1.0]])}
    ei = {("a", "r", "b"): torch.tensor([[0, 1, 2], [0, 0, 1]]),  # b0 <- a0, a1 ; b1 <- a2
          ("b", "rev", "a"): torch.tensor([[0, 0], [0, 1]])}  # a0 <- b0 ; a1 <- b0 ; a2 has no context
    ctx = context_vectors(h, ei, Wp)
    proj = lambda typ, i: Wp[typ].double().numpy() @ h[typ][i].double().numpy()  # noqa: E731
    c_b = [(proj("a", 0) + proj("a", 1)) / 2, proj("a", 2)]
    c_a = [proj("b", 0), proj("b", 0)]
    assert np.allclose(ctx["b"][0].double().numpy(), c_b, atol=1e-6)
    assert np.allclose(ctx["a"][0][:2].double().numpy(), c_a, atol=1e-6)
    assert ctx["a"][1].tolist() == [True, True, False] and ctx["b"][1].tolist() == [True, True]

    loss_b, n_b = context_loss(h["b"], *ctx["b"], n_max=None)
    hb = h["b"].double().numpy()
    expected = [neg_log_softmax([c_b[u] @ hb[v] for u in range(2)], v) for v in range(2)]
    assert np.allclose(loss_b.double().numpy(), expected, atol=1e-5) and n_b.tolist() == [1, 1]

    loss_a, n_a = context_loss(h["a"], *ctx["a"], n_max=None)  # a2 skipped
    ha = h["a"].double().numpy()
    expected = [neg_log_softmax([c_a[u] @ ha[v] for u in range(2)], v) for v in range(2)]
    assert loss_a.shape == (2,) and np.allclose(loss_a.double().numpy(), expected, atol=1e-5)


def test_context_counts_multi_edge_types():
    """Neighbours over several edge types are pooled into one mean."""
    h = {"a": t([[1.0, 0.0]]), "b": t([[0.0, 2.0]]), "c": t([[4.0, 4.0]])}
    eye = {k: torch.eye(2) for k in h}
    ei = {("a", "x", "c"): torch.tensor([[0], [0]]), ("b", "y", "c"): torch.tensor([[0, 0], [0, 0]])}
    c, has = context_vectors(h, ei, eye)["c"]
    assert torch.allclose(c, t([[1 / 3, 4 / 3]])) and has.tolist() == [True]


# -- Eq. 6 ------------------------------------------------------------------------------


def test_combined_excludes_terms_without_negatives():
    out = combined_loss([(t([2.0, 5.0]), torch.tensor([1, 0]))], [(t([1.0]), torch.tensor([3]))], [])
    assert val(out.row) == pytest.approx(2.0 / math.log(2))
    assert val(out.link) == pytest.approx(1.0 / math.log(4))
    assert out.context is None and out.num_row == 1 and out.num_link == 1
    assert val(out.total) == pytest.approx(2.0 / math.log(2) + 1.0 / math.log(4))
    d = out.as_dict()
    assert math.isnan(d["context"]) and d["loss"] == pytest.approx(val(out.total))


def test_combined_pools_types_before_mean():
    out = combined_loss([(t([1.0]), torch.tensor([1])), (t([3.0, 3.0, 3.0]), torch.tensor([1, 1, 1]))], [], [])
    assert val(out.row) == pytest.approx((1 + 9) / 4 / math.log(2))


def test_combined_nothing_to_learn_still_backprops():
    x = torch.ones(2, requires_grad=True)
    out = combined_loss([(x * 1.0, torch.tensor([0, 0]))], [], [])
    assert val(out.total) == 0.0 and out.row is None
    out.total.backward()
    assert torch.equal(x.grad, torch.zeros(2))
    assert float(combined_loss([], [], []).total) == 0.0


def toy_batch(sizes: dict[str, int], edges: dict[tuple[str, str, str], int], seed: int = 0) -> HeteroData:
    g = torch.Generator().manual_seed(seed)
    b = HeteroData()
    for k, n in sizes.items():
        b[k].num_nodes = n
    for (s, r, d), e in edges.items():
        b[(s, r, d)].edge_index = torch.stack([torch.randint(max(sizes[s], 1), (e,), generator=g),
                                               torch.randint(max(sizes[d], 1), (e,), generator=g)])
    return b


def test_objective_equals_one_at_chance():
    """Tiny random embeddings: every softmax is uniform, so every normalised term is 1."""
    sizes = {"a": 400, "b": 60, "c": 3}
    edges = {("a", "to", "b"): 400, ("b", "rev", "a"): 400, ("c", "to", "a"): 300}
    batch = toy_batch(sizes, edges)
    obj = ContrastiveObjective(sizes, edges, channels=16)
    g = torch.Generator().manual_seed(1)
    h = {k: 1e-4 * torch.randn(n, 16, generator=g) for k, n in sizes.items()}
    h_hat = {k: 1e-4 * torch.randn(n, 16, generator=g) for k, n in sizes.items()}
    out = obj(h, h_hat, batch, generator=g)
    for term in (out.row, out.link, out.context):
        assert val(term) == pytest.approx(1.0, abs=1e-3)
    assert val(out.total) == pytest.approx(3.0, abs=3e-3)
    assert out.num_row == sum(sizes.values()) and 1000 < out.num_link <= 1100


def test_objective_large_random_embeddings_near_chance():
    """Random (not tiny) embeddings, large N: still roughly chance, and never NaN."""
    sizes = {"a": 600, "b": 300}
    edges = {("a", "to", "b"): 600, ("b", "rev", "a"): 600}
    batch = toy_batch(sizes, edges, seed=2)
    obj = ContrastiveObjective(sizes, edges, channels=32)
    g = torch.Generator().manual_seed(3)
    h = {k: torch.randn(n, 32, generator=g) for k, n in sizes.items()}
    h_hat = {k: torch.randn(n, 32, generator=g) for k, n in sizes.items()}
    out = obj(h, h_hat, batch, generator=g)
    for term in (out.row, out.link, out.context):
        assert 0.8 < val(term) < 1.3


def test_objective_deterministic_with_generator_and_no_nan_at_extremes():
    sizes = {"a": 300, "b": 20}
    edges = {("a", "to", "b"): 300, ("b", "rev", "a"): 300}
    batch = toy_batch(sizes, edges)
    obj = ContrastiveObjective(sizes, edges, channels=8)
    h = {k: 1e3 * torch.randn(n, 8) for k, n in sizes.items()}  # huge logits
    h = {k: v.requires_grad_() for k, v in h.items()}
    h_hat = {k: v.detach() + torch.randn_like(v) for k, v in h.items()}
    a = obj(h, h_hat, batch, generator=torch.Generator().manual_seed(5))
    b = obj(h, h_hat, batch, generator=torch.Generator().manual_seed(5))
    assert val(a.total) == val(b.total) and math.isfinite(val(a.total))
    a.total.backward()
    assert all(torch.isfinite(v.grad).all() for v in h.values())
    assert all(torch.isfinite(p.grad).all() for p in obj.parameters() if p.grad is not None)


def test_objective_respects_n_max():
    sizes = {"a": 500, "b": 500}
    edges = {("a", "to", "b"): 300}
    obj = ContrastiveObjective(sizes, edges, channels=4, n_max=32)
    h = {k: torch.zeros(n, 4) for k, n in sizes.items()}
    out = obj(h, h, toy_batch(sizes, edges), generator=torch.Generator().manual_seed(0))
    # zero embeddings: every term is exactly log(33)/mu(32) = 1 with 32 negatives
    assert val(out.row) == pytest.approx(1.0) and val(out.link) == pytest.approx(1.0)


def test_objective_terms_subset_and_empty_types():
    sizes = {"a": 10, "b": 0}
    edges = {("a", "to", "b"): 0}
    obj = ContrastiveObjective(sizes, edges, channels=4, terms=("row",))
    h = {k: torch.randn(n, 4, requires_grad=True) for k, n in sizes.items()}
    out = obj(h, {k: v.detach() for k, v in h.items()}, toy_batch(sizes, edges))
    assert out.link is None and out.context is None and out.row is not None
    with pytest.raises(ValueError):
        ContrastiveObjective(sizes, edges, terms=("rows",))


# -- gradients through a real backbone ----------------------------------------------------


def f1_batch(graph, per_type: int, seed: int) -> HeteroData:
    """Random rows of every table and the edges among them (induced subgraph)."""
    g = torch.Generator().manual_seed(seed)
    n_id = {t: torch.randperm(graph.num_nodes(t), generator=g)[:per_type].sort().values for t in graph.node_types}
    batch = graph.data.subgraph(n_id)
    for t, ids in n_id.items():
        batch[t].n_id = ids
    return batch


def test_gradients_reach_objective_and_backbone(f1_graph):
    from relcore.corruption import MarginalPool, corrupt
    from relcore.models import BackboneConfig, GraphMeta, RDLBackbone

    torch.manual_seed(0)
    meta = GraphMeta.from_graph(f1_graph)
    backbone = RDLBackbone(BackboneConfig(table_model="linear", channels=32), meta)
    obj = ContrastiveObjective(meta.node_types, meta.edge_types, channels=32)
    batch = f1_batch(f1_graph, 150, seed=1)
    pool = MarginalPool(f1_graph)
    g = torch.Generator().manual_seed(2)
    corrupted = batch.clone()
    for t in batch.node_types:
        corrupted[t].tf = corrupt(batch[t].tf, t, 0.3, pool, generator=g)
    out = obj(backbone(batch), backbone(corrupted), batch, generator=g)
    assert out.row is not None and out.link is not None and out.context is not None
    out.total.backward()

    present = {et for et in batch.edge_types if batch[et].edge_index.size(1) > 0}
    assert present, "test batch has no edges"
    for t in meta.node_types:
        assert obj.row_weight[t].grad is not None and obj.row_weight[t].grad.abs().sum() > 0
    for et in present:
        w = obj.link_weight["__".join(et)]
        assert w.grad is not None and w.grad.abs().sum() > 0, et
        assert obj.context_weight[et[0]].grad.abs().sum() > 0
    for name, p in backbone.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name
    for t in meta.node_types:
        grads = [p.grad for p in backbone.table_models[t].parameters() if p.grad is not None]
        assert grads and any(gr.abs().sum() > 0 for gr in grads), t
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.gnn.parameters())
