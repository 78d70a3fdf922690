"""Hyper-parameters of the RDL backbone as one flat, JSON-able dataclass.

Flat on purpose: Ray Tune samples each field as a parameter and MLflow logs them as
``key=value`` strings, so nesting would only have to be flattened again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from relcore.errors import RelcoreError

TABLE_MODELS = ("linear", "resnet")
AGGRS = ("sum", "mean")
LAYERS = (2, 3)


@dataclass(frozen=True)
class BackboneConfig:
    """The paper's backbone grid: table model x GNN depth x neighbour aggregation.

    Args:
        table_model: ``"linear"`` (column embeddings concatenated, one linear map to
            ``channels``) or ``"resnet"`` (pytorch-frame's tabular ResNet).
        channels: embedding width :math:`d` of column embeddings, rows and nodes.
        layers: number of heterogeneous GraphSAGE layers (2 or 3).
        aggr: SAGEConv's neighbour aggregation, ``"sum"`` or ``"mean"``.
        resnet_layers: residual blocks of the ResNet table model (relbench uses 4).
        dropout: dropout inside the ResNet blocks (pytorch-frame's default, 0.2, as
            relbench uses); the linear table model has none.
        temporal: add the encoding of ``seed_time - row time`` to timed tables'
            rows when a batch carries ``seed_time``.
    """

    table_model: str = "linear"
    channels: int = 128
    layers: int = 2
    aggr: str = "sum"
    resnet_layers: int = 4
    dropout: float = 0.2
    temporal: bool = True

    def __post_init__(self) -> None:
        if self.table_model not in TABLE_MODELS:
            raise RelcoreError(f"table_model must be one of {TABLE_MODELS}, got {self.table_model!r}")
        if self.aggr not in AGGRS:
            raise RelcoreError(f"aggr must be one of {AGGRS}, got {self.aggr!r}")
        if self.layers not in LAYERS:
            raise RelcoreError(f"layers must be one of {LAYERS}, got {self.layers!r}")
        if not isinstance(self.channels, int) or isinstance(self.channels, bool) or self.channels < 2 \
                or self.channels % 2:
            # PositionalEncoding splits channels into sin/cos halves.
            raise RelcoreError(f"channels must be an even integer >= 2, got {self.channels!r}")
        if not isinstance(self.resnet_layers, int) or self.resnet_layers < 1:
            raise RelcoreError(f"resnet_layers must be an integer >= 1, got {self.resnet_layers!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise RelcoreError(f"dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{field: int|float|str|bool}``, JSON-able."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneConfig:
        """Inverse of :meth:`to_dict`; missing fields take defaults, unknown ones are an error.

        Values are coerced to the field's type so that strings logged by MLflow
        (``"3"``, ``"0.2"``, ``"True"``) and numpy scalars from Ray Tune come back typed.
        """
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise RelcoreError(f"unknown backbone config key(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, value in d.items():
            default = known[name].default
            try:
                if isinstance(default, bool):
                    kwargs[name] = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
                elif isinstance(default, int):
                    as_float = float(value)
                    if as_float != int(as_float):
                        raise ValueError
                    kwargs[name] = int(as_float)
                elif isinstance(default, float):
                    kwargs[name] = float(value)
                else:
                    kwargs[name] = str(value)
            except (TypeError, ValueError):
                raise RelcoreError(f"backbone config {name}={value!r} is not a valid {type(default).__name__}") \
                    from None
        return cls(**kwargs)
