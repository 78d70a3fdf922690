"""A relational database as a heterogeneous temporal graph.

Row = node, primary/foreign-key pair = edge (both directions). relbench's
:func:`~relbench.modeling.graph.make_pkey_fkey_graph` does the conversion and
pytorch-frame materialises each table into a ``TensorFrame``; this module adds
deterministic stype inference with user overrides, offline text embedders, and an
on-disk cache keyed by database content, stypes and embedder that is written to a
temporary name and renamed, so an interrupted build never leaves a partial cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from relbench.base import Database
from relbench.modeling.graph import make_pkey_fkey_graph
from torch_frame import stype
from torch_frame.config import TextEmbedderConfig
from torch_frame.utils import infer_df_stype
from torch_geometric.data import HeteroData

from relcore.errors import RelcoreError
from relcore.text import make_text_embedder

GRAPH_FORMAT_VERSION = 1
StypeMap = dict[str, dict[str, stype]]


def default_cache_root() -> Path:
    """``$RELCORE_CACHE_DIR`` or ``~/.cache/relcore``."""
    return Path(os.environ.get("RELCORE_CACHE_DIR", Path.home() / ".cache" / "relcore"))


def infer_stypes(db: Database, overrides: StypeMap | None = None, sample: int = 1_000) -> StypeMap:
    """pytorch-frame's stype inference on a seeded sample of each table, then user overrides.

    Mirrors relbench's ``get_stype_proposal`` (which samples unseeded) so the same
    database always gets the same stypes, hence the same cache key.
    """
    result: StypeMap = {}
    for name, table in db.table_dict.items():
        df = table.df.sample(min(sample, len(table.df)), random_state=0)
        inferred = infer_df_stype(df)
        for col, st in inferred.items():
            if st == stype.embedding:  # relbench's choice for list-valued columns
                inferred[col] = stype.multicategorical
        result[name] = inferred
    for table_name, cols in (overrides or {}).items():
        if table_name not in result:
            raise RelcoreError(f"stype override names unknown table '{table_name}'")
        for col, st in cols.items():
            if col not in db.table_dict[table_name].df.columns:
                raise RelcoreError(f"stype override names unknown column '{table_name}.{col}'")
            result[table_name][col] = stype(st) if isinstance(st, str) else st
    return result


def schema_of(db: Database) -> dict:
    """Tables' keys and time columns as plain JSON-able data."""
    return {
        name: {
            "pkey": t.pkey_col,
            "time_col": t.time_col,
            "fkeys": dict(t.fkey_col_to_pkey_table),
            "rows": len(t.df),
        }
        for name, t in db.table_dict.items()
    }


def content_key(db: Database, stypes: StypeMap, embedder: str) -> str:
    """sha256 over every table's content, the schema, the stypes and the embedder name."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": GRAPH_FORMAT_VERSION, "embedder": embedder}).encode())
    h.update(json.dumps(schema_of(db), sort_keys=True).encode())
    h.update(json.dumps({t: {c: s.value for c, s in cols.items()} for t, cols in stypes.items()},
                        sort_keys=True).encode())
    for name in sorted(db.table_dict):
        df = db.table_dict[name].df
        h.update(name.encode())
        h.update(",".join(map(str, df.columns)).encode())
        h.update(pd.util.hash_pandas_object(df.astype(str) if _has_unhashable(df) else df,
                                            index=False).values.tobytes())
    return h.hexdigest()[:24]


def _has_unhashable(df: pd.DataFrame) -> bool:
    return any(df[c].dtype == object and len(df) and isinstance(df[c].iloc[0], (list, np.ndarray))
               for c in df.columns)


@dataclass
class RelGraph:
    """The materialised graph of one database.

    ``data[table].tf`` is the table's ``TensorFrame`` (row i = primary key i),
    ``data[table].time`` its row times in unix seconds (tables with a time column),
    ``data[edge_type].edge_index`` the ``f2p_*`` / ``rev_f2p_*`` links (src -> dst).
    """

    data: HeteroData
    col_stats: dict
    schema: dict
    stypes: StypeMap
    key: str

    @property
    def node_types(self) -> list[str]:
        return list(self.data.node_types)

    @property
    def edge_types(self) -> list[tuple[str, str, str]]:
        return list(self.data.edge_types)

    def num_nodes(self, node_type: str) -> int:
        return len(self.data[node_type].tf)

    def time(self, node_type: str) -> torch.Tensor | None:
        """Row times (unix seconds) or None for a table without a time column."""
        store = self.data[node_type]
        return store.time if "time" in store else None


def build_graph(
    db: Database,
    stype_overrides: StypeMap | None = None,
    embedder: str = "hash",
    cache_root: str | Path | None = None,
) -> RelGraph:
    """Materialise ``db`` into a :class:`RelGraph`, reusing the content-keyed cache."""
    stypes = infer_stypes(db, stype_overrides)
    key = content_key(db, stypes, embedder)
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    final = root / f"graph-{key}"
    if final.is_dir():
        data, col_stats = _materialise(db, stypes, embedder, final)
    else:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".graph-{key}-", dir=root))
        try:
            data, col_stats = _materialise(db, stypes, embedder, tmp)
            try:
                os.rename(tmp, final)  # atomic: a reader sees all tables or none
            except OSError:  # another worker finished first; theirs is identical
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return RelGraph(data=data, col_stats=col_stats, schema=schema_of(db), stypes=stypes, key=key)


def _materialise(db: Database, stypes: StypeMap, embedder: str, cache_dir: Path):
    with warnings.catch_warnings():
        # pytorch-frame warns on dateutil parsing and on its own non-weights-only load.
        warnings.simplefilter("ignore", UserWarning)
        return _make_graph(db, stypes, embedder, cache_dir)


def _make_graph(db: Database, stypes: StypeMap, embedder: str, cache_dir: Path):
    # relbench mutates the stype dicts (drops key columns): hand it copies.
    col_to_stype = {t: dict(cols) for t, cols in stypes.items()}
    needs_text = any(st == stype.text_embedded for cols in col_to_stype.values() for st in cols.values())
    text_cfg = (
        TextEmbedderConfig(text_embedder=make_text_embedder(embedder), batch_size=4096)
        if needs_text else None
    )
    return make_pkey_fkey_graph(db, col_to_stype, text_embedder_cfg=text_cfg, cache_dir=str(cache_dir))
