r"""Stages 1-2 of the RDL blueprint: attribute encoders and one table model per table.

A row :math:`r` of a table with columns :math:`c_1 \dots c_n` is first turned into
column embeddings :math:`e_{c_i}(r_{c_i}) \in \mathbb{R}^d` by the stype encoder of
each column (pytorch-frame's, the same ones relbench's ``HeteroEncoder`` uses), then
into one row vector by the table model:

.. math::
    \text{Linear:}\quad \mathbf{x}_r = \mathbf{W} \,[e_{c_1} \,\|\, \dots \,\|\, e_{c_n}]
    + \mathbf{b}

    \text{ResNet:}\quad \mathbf{x}_r = \mathrm{ResNet}([e_{c_1} \,\|\, \dots \,\|\, e_{c_n}])
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch_frame import TensorFrame, stype
from torch_frame.data.stats import StatType
from torch_frame.nn import (
    EmbeddingEncoder,
    LinearEmbeddingEncoder,
    LinearEncoder,
    MultiCategoricalEmbeddingEncoder,
    StypeWiseFeatureEncoder,
    TimestampEncoder,
)
from torch_frame.nn.models import ResNet

# relbench.modeling.nn.HeteroEncoder's default_stype_encoder_cls_kwargs; text
# embeddings arrive as stype.embedding (relbench materialises text_embedded so).
STYPE_ENCODERS = {
    stype.categorical: EmbeddingEncoder,
    stype.numerical: LinearEncoder,
    stype.multicategorical: MultiCategoricalEmbeddingEncoder,
    stype.embedding: LinearEmbeddingEncoder,
    stype.timestamp: TimestampEncoder,
}


def make_stype_encoders(col_names_dict: dict[stype, list[str]]) -> dict[stype, torch.nn.Module]:
    """Fresh stype encoders for the (parent) stypes present in one table."""
    out = {}
    for st in col_names_dict:
        parent = st.parent
        if parent not in STYPE_ENCODERS:
            raise ValueError(f"no encoder for stype {st}")
        out[parent] = STYPE_ENCODERS[parent]()
    return out


class LinearTableModel(torch.nn.Module):
    r"""Column embeddings concatenated and mapped to :math:`d` by one linear layer.

    .. math::
        \mathbf{x}_r = \mathbf{W} \,[e_{c_1}(r) \,\|\, \dots \,\|\, e_{c_n}(r)] + \mathbf{b},
        \qquad \mathbf{W} \in \mathbb{R}^{d \times n d}
    """

    def __init__(self, channels: int, col_names_dict: dict[stype, list[str]],
                 col_stats: dict[str, dict[StatType, Any]]):
        super().__init__()
        self.encoder = StypeWiseFeatureEncoder(
            out_channels=channels,
            col_stats=col_stats,
            col_names_dict=col_names_dict,
            stype_encoder_dict=make_stype_encoders(col_names_dict),
        )
        num_cols = sum(len(c) for c in col_names_dict.values())
        self.lin = torch.nn.Linear(num_cols * channels, channels)

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        self.lin.reset_parameters()

    def forward(self, tf: TensorFrame) -> Tensor:
        x, _ = self.encoder(tf)  # [rows, cols, d]
        return self.lin(x.reshape(x.size(0), math.prod(x.shape[1:])))


def make_table_model(kind: str, channels: int, col_names_dict: dict[stype, list[str]],
                     col_stats: dict[str, dict[StatType, Any]], resnet_layers: int = 4,
                     dropout: float = 0.2) -> torch.nn.Module:
    """One module mapping a table's ``TensorFrame`` to ``[rows, channels]``."""
    if kind == "linear":
        return LinearTableModel(channels, col_names_dict, col_stats)
    if kind == "resnet":
        # Same construction as relbench's HeteroEncoder with torch_frame's ResNet.
        return ResNet(
            channels=channels,
            out_channels=channels,
            num_layers=resnet_layers,
            col_stats=col_stats,
            col_names_dict=col_names_dict,
            stype_encoder_dict=make_stype_encoders(col_names_dict),
            dropout_prob=dropout,
        )
    raise ValueError(f"unknown table model {kind!r}")


__all__ = ["LinearTableModel", "make_table_model", "make_stype_encoders", "STYPE_ENCODERS"]
