"""What a backbone needs to know about a database, without the data.

:class:`GraphMeta` holds the node types, edge types, per-table columns (by stype) and
pytorch-frame column statistics a :class:`~relcore.models.RDLBackbone` is built from.
It is stored in every checkpoint, so a checkpoint can be rebuilt without the graph and
its schema checked against the graph it is about to be applied to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch_frame import stype
from torch_frame.data.stats import StatType

from relcore.errors import RelcoreError

EdgeType = tuple[str, str, str]
ColNames = dict[stype, list[str]]


@dataclass
class GraphMeta:
    """Schema plus column statistics of a :class:`~relcore.graph.RelGraph`.

    Attributes:
        node_types: tables, in graph order.
        edge_types: ``(src, relation, dst)`` triples, in graph order.
        col_names_dict: per table, pytorch-frame's ``{stype: [column, ...]}`` in
            ``TensorFrame.feat_dict`` order (key columns excluded).
        col_stats: per table, ``{column: {StatType: value}}`` for those columns.
        time_node_types: tables with a time column (``data[t].time``).
    """

    node_types: list[str]
    edge_types: list[EdgeType]
    col_names_dict: dict[str, ColNames]
    col_stats: dict[str, dict[str, dict[StatType, Any]]]
    time_node_types: list[str]

    @classmethod
    def from_graph(cls, graph) -> GraphMeta:
        """Read the meta data off a :class:`~relcore.graph.RelGraph`."""
        data = graph.data
        col_names = {t: {st: list(cols) for st, cols in data[t].tf.col_names_dict.items()}
                     for t in data.node_types}
        stats = {t: {c: dict(graph.col_stats[t][c]) for cols in col_names[t].values() for c in cols}
                 for t in data.node_types}
        return cls(
            node_types=list(data.node_types),
            edge_types=[tuple(et) for et in data.edge_types],
            col_names_dict=col_names,
            col_stats=stats,
            time_node_types=[t for t in data.node_types if "time" in data[t]],
        )

    # -- schema -----------------------------------------------------------------

    def schema(self) -> dict[str, Any]:
        """The part a checkpoint must agree on: types and columns (not statistics)."""
        return {
            "node_types": sorted(self.node_types),
            "edge_types": sorted(list(et) for et in self.edge_types),
            "columns": {t: {st.value: list(cols) for st, cols in self.col_names_dict[t].items()}
                        for t in sorted(self.node_types)},
            "time_node_types": sorted(self.time_node_types),
        }

    def schema_mismatch(self, other: GraphMeta) -> str | None:
        """A one-line description of the first schema difference, or None when compatible."""
        a, b = self.schema(), other.schema()
        if a["node_types"] != b["node_types"]:
            return _set_diff("tables", a["node_types"], b["node_types"])
        if a["edge_types"] != b["edge_types"]:
            return _set_diff("edge types", [tuple(e) for e in a["edge_types"]],
                             [tuple(e) for e in b["edge_types"]])
        for t in a["node_types"]:
            if a["columns"][t] != b["columns"][t]:
                return f"table '{t}' columns differ: {a['columns'][t]} vs {b['columns'][t]}"
        if a["time_node_types"] != b["time_node_types"]:
            return _set_diff("timed tables", a["time_node_types"], b["time_node_types"])
        return None

    # -- serialisation ----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (tensors become ``{"__tensor__": list, "dtype": str}``)."""
        return {
            "node_types": list(self.node_types),
            "edge_types": [list(et) for et in self.edge_types],
            "col_names_dict": {t: {st.value: list(cols) for st, cols in d.items()}
                               for t, d in self.col_names_dict.items()},
            "col_stats": {t: {c: {k.value: _to_plain(v) for k, v in s.items()} for c, s in cols.items()}
                          for t, cols in self.col_stats.items()},
            "time_node_types": list(self.time_node_types),
        }

    def __post_init__(self) -> None:
        types = set(self.node_types)
        for name, tables in (("columns", self.col_names_dict), ("column statistics", self.col_stats)):
            if set(tables) != types:
                raise RelcoreError(f"graph meta data: {name} are given for {sorted(tables)}, "
                                   f"not for the tables {sorted(types)}")
        bad = [et for et in self.edge_types if et[0] not in types or et[2] not in types]
        if bad or not set(self.time_node_types) <= types:
            raise RelcoreError(f"graph meta data: edge types or timed tables name unknown tables: {bad}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GraphMeta:
        try:
            return cls(
                node_types=list(d["node_types"]),
                edge_types=[tuple(et) for et in d["edge_types"]],
                col_names_dict={t: {stype(st): list(cols) for st, cols in cd.items()}
                                for t, cd in d["col_names_dict"].items()},
                col_stats={t: {c: {StatType(k): _from_plain(v) for k, v in s.items()} for c, s in cols.items()}
                           for t, cols in d["col_stats"].items()},
                time_node_types=list(d["time_node_types"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise RelcoreError(f"invalid graph meta data: {type(e).__name__}: {e}") from None


def _set_diff(what: str, a: list, b: list) -> str:
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    return f"{what} differ (only in checkpoint: {only_a}; only in graph: {only_b})"


def _to_plain(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return {"__tensor__": x.tolist(), "dtype": str(x.dtype).removeprefix("torch.")}
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _to_plain(v) for k, v in x.items()}
    return x


def _from_plain(x: Any) -> Any:
    if isinstance(x, dict):
        if "__tensor__" in x:
            return torch.tensor(x["__tensor__"], dtype=getattr(torch, x["dtype"]))
        return {k: _from_plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_plain(v) for v in x]
    return x
