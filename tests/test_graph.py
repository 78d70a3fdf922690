"""Database -> HeteroData: node/edge types, stypes, text embedders and the on-disk cache."""

from __future__ import annotations

import time

import pytest
import torch
from torch_frame import stype

from relcore.errors import RelcoreError
from relcore.graph import build_graph, content_key, infer_stypes
from relcore.text import HashTextEmbedder, make_text_embedder


def test_f1_graph_shape(f1_graph):
    assert len(f1_graph.node_types) == 9
    assert len(f1_graph.edge_types) == 26  # 13 foreign keys, both directions
    assert f1_graph.num_nodes("results") == 20_323
    # every table's rows are materialised; timed tables carry unix-second times
    assert f1_graph.time("results").dtype == torch.int64
    assert f1_graph.time("drivers") is None
    edges = sum(f1_graph.data[et].edge_index.size(1) for et in f1_graph.edge_types)
    assert edges == 2 * 169_421


def test_cache_reused(f1_dataset, cache_root, f1_graph):
    start = time.perf_counter()
    again = build_graph(f1_dataset.get_db(), cache_root=cache_root)
    assert again.key == f1_graph.key
    assert (cache_root / f"graph-{f1_graph.key}").is_dir()
    assert time.perf_counter() - start < 5
    for nt in f1_graph.node_types:
        a, b = f1_graph.data[nt].tf, again.data[nt].tf
        assert a.feat_dict.keys() == b.feat_dict.keys(), nt
        for st, feat in a.feat_dict.items():
            if isinstance(feat, torch.Tensor):
                assert torch.equal(torch.nan_to_num(feat), torch.nan_to_num(b.feat_dict[st]))
            else:  # MultiEmbeddingTensor (text embeddings) / MultiNestedTensor
                assert torch.equal(feat.values, b.feat_dict[st].values), (nt, st)
                assert torch.equal(feat.offset, b.feat_dict[st].offset), (nt, st)


def test_key_depends_on_stypes_and_embedder(f1_dataset):
    db = f1_dataset.get_db()
    stypes = infer_stypes(db)
    overridden = infer_stypes(db, {"races": {"year": "numerical"}})
    assert overridden["races"]["year"] == stype.numerical
    keys = {content_key(db, stypes, "hash"), content_key(db, overridden, "hash"),
            content_key(db, stypes, "minilm")}
    assert len(keys) == 3


def test_bad_stype_override(f1_dataset):
    with pytest.raises(RelcoreError, match="unknown column 'races.nope'"):
        infer_stypes(f1_dataset.get_db(), {"races": {"nope": "numerical"}})


def test_interrupted_build_leaves_no_cache(f1_dataset, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = HashTextEmbedder.__call__

    def dies_midway(self, sentences):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt  # as if the user hit Ctrl-C during materialisation
        return real(self, sentences)

    monkeypatch.setattr(HashTextEmbedder, "__call__", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        build_graph(f1_dataset.get_db(), cache_root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_hash_embedder_deterministic():
    emb = HashTextEmbedder(dim=32)
    a = emb(["Lewis Hamilton", "Monaco", "Lewis Hamilton"])
    assert a.shape == (3, 32)
    assert torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1])
    assert torch.allclose(a.norm(dim=1), torch.ones(3))


def test_minilm_embedder_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = make_text_embedder("minilm")
    out = emb(["a race in Monaco", "a race in Monte Carlo", "tax law"])
    assert out.shape == (3, 384)
    sim = torch.nn.functional.cosine_similarity
    assert sim(out[0:1], out[1:2]) > sim(out[0:1], out[2:3])


def test_unknown_embedder():
    with pytest.raises(RelcoreError, match="unknown text embedder"):
        make_text_embedder("glove")
