"""Backbone checkpoints: config, graph meta data, weights and caller's extras in one file.

Everything but the weights is stored as plain data (dicts, lists, str, numbers), so
checkpoints load with ``torch.load(weights_only=True)`` -- no pickled code runs -- and
the schema can be checked before any weights are touched. Writes go to a temporary
file in the target directory and are renamed into place, so a crash mid-save never
leaves a truncated checkpoint under the final name.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_frame import stype
from torch_frame.data.stats import StatType

from relcore.errors import RelcoreError
from relcore.models.backbone import RDLBackbone
from relcore.models.config import BackboneConfig
from relcore.models.meta import GraphMeta

CHECKPOINT_FORMAT = "relcore-backbone"
CHECKPOINT_VERSION = 1


@dataclass
class BackboneCheckpoint:
    """The decoded content of a checkpoint file."""

    config: BackboneConfig
    graph_meta: GraphMeta
    state_dict: dict[str, torch.Tensor]
    extra: dict[str, Any] = field(default_factory=dict)


def save_backbone(path: str | os.PathLike, backbone: RDLBackbone, extra: dict | None = None) -> Path:
    """Write ``backbone`` (config, graph meta, weights) plus ``extra`` to ``path`` atomically.

    ``extra`` must be plain data (str/int/float/bool/None, lists, dicts with str keys,
    tensors); numpy scalars/arrays and paths are converted. Returns the path.
    """
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": backbone.config.to_dict(),
        "graph_meta": backbone.graph_meta.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in backbone.state_dict().items()},
        "extra": _plain_extra(extra or {}, "extra"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> BackboneCheckpoint:
    """Decode a checkpoint without building the model; :class:`RelcoreError` if missing/corrupt."""
    path = Path(path)
    if not path.is_file():
        raise RelcoreError(f"backbone checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, not a torch file, foreign pickle...
        raise RelcoreError(f"cannot read backbone checkpoint {path}: {_one_line(e)}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise RelcoreError(f"{path} is not a relcore backbone checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise RelcoreError(f"backbone checkpoint {path} has unsupported version {payload.get('version')!r}")
    try:
        return BackboneCheckpoint(
            config=BackboneConfig.from_dict(payload["config"]),
            graph_meta=GraphMeta.from_dict(payload["graph_meta"]),
            state_dict=payload["state_dict"],
            extra=payload.get("extra") or {},
        )
    except KeyError as e:
        raise RelcoreError(f"backbone checkpoint {path} lacks {e}") from None
    except RelcoreError as e:
        raise RelcoreError(f"backbone checkpoint {path}: {e}") from None


def load_backbone(path: str | os.PathLike, graph_or_meta, map_location: str | torch.device = "cpu") -> RDLBackbone:
    """Rebuild the backbone saved at ``path`` for use on ``graph_or_meta``.

    ``graph_or_meta`` (a :class:`~relcore.graph.RelGraph` or :class:`GraphMeta`) must
    have the checkpoint's schema: same tables, edge types and columns per table
    (stype and order), else :class:`RelcoreError`. The model is built from the
    checkpoint's own column statistics (the encoders' normalisation belongs to the
    weights). A categorical vocabulary that differs from the graph's is refused, naming
    the column: category ids would index other rows of the embedding table, or past it
    (a checkpoint pretrained on another cut of the database, ``--db-cut``).
    """
    ckpt = read_checkpoint(path, map_location)
    meta = graph_or_meta if isinstance(graph_or_meta, GraphMeta) else GraphMeta.from_graph(graph_or_meta)
    mismatch = ckpt.graph_meta.schema_mismatch(meta)
    if mismatch is not None:
        raise RelcoreError(f"backbone checkpoint {path} does not fit this database: {mismatch}")
    differences = _vocabulary_differences(ckpt.graph_meta, meta)
    if differences:
        more = f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
        raise RelcoreError(f"backbone checkpoint {path} does not fit this graph's encoders: "
                           f"{differences[0]}{more}; pretrain and fine-tune on the same --db-cut")
    model = RDLBackbone(ckpt.config, ckpt.graph_meta)
    try:
        model.load_state_dict(ckpt.state_dict)
    except RuntimeError as e:
        raise RelcoreError(f"backbone checkpoint {path}: weights do not fit the backbone: {_one_line(e)}") from None
    return model.to(map_location)


def _vocabulary_differences(saved: GraphMeta, current: GraphMeta) -> list[str]:
    out = []
    for t, cols in saved.col_names_dict.items():
        for st, names in cols.items():
            key = {stype.categorical: StatType.COUNT, stype.multicategorical: StatType.MULTI_COUNT}.get(st.parent)
            if key is None:
                continue
            for c in names:
                a = saved.col_stats[t][c].get(key)
                b = current.col_stats.get(t, {}).get(c, {}).get(key)
                if a is not None and b is not None and list(a[0]) != list(b[0]):
                    out.append(f"category vocabulary of '{t}.{c}' differs from the graph's")
    return out


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _plain_extra(x: Any, where: str) -> Any:
    """``x`` as data ``torch.load(weights_only=True)`` accepts, or RelcoreError naming the culprit."""
    if x is None or isinstance(x, (bool, int, float, str, torch.Tensor)):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    if isinstance(x, (list, tuple)):
        return [_plain_extra(v, f"{where}[{i}]") for i, v in enumerate(x)]
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if not isinstance(k, (str, int)):
                raise RelcoreError(f"checkpoint {where} has a non-string key {k!r}")
            out[k] = _plain_extra(v, f"{where}[{k!r}]")
        return out
    raise RelcoreError(f"checkpoint {where} holds a {type(x).__name__}; only plain data can be stored")
