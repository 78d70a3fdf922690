"""The paper's reference pretraining step (Peleška & Šír), built from ``redelex==0.6.2``.

What the reference code does per step (``experiments/pretraining/dbgnn_pretrain.py``
and ``lightning_wrappers.py`` of github.com/jakubpeleska/redelex):

* data: ``HGTLoader(train_data, num_samples=[batch_size] * max(schema_diameter, 3),
  input_nodes="results", transform=DBResampleCorruptor(train_data, corrupt_prob,
  distribution="uniform").corrupt_data, batch_size=batch_size, shuffle=True,
  drop_last=True)``, ``train_data`` = the graph of ``db.upto(val_timestamp)``;
  the corruptor adds ``cor_tf`` to every node type of the sampled batch;
* model: ``RDLModel`` = relbench ``HeteroEncoder`` (table model ``LinearRowEncoder``
  or torch_frame ``ResNet(num_layers=4)``) + ``HeteroTemporalEncoder`` (unused when
  no entity table is given, as in pretraining) + relbench ``HeteroGraphSAGE``;
* loss: ``PretrainingWrapper`` runs the backbone on ``tf`` and on ``cor_tf`` and sums
  ``TableContrastiveLoss(x, cor)``, ``EdgeContrastiveLoss(batch, x)`` and
  ``ContextContrastiveLoss(batch, x)`` (temperature 1.0);
* optimiser: Adam, lr 1e-3 (Lightning's ``training_step`` + ``optimizer.step``).

The PyPI wheel ``redelex==0.6.2`` ships the table encoder, the three losses and the
corruptor (``redelex.transforms.ResampleCorruptor``, the repository's
``DBResampleCorruptor``) -- those are imported and used unchanged. It does NOT ship
``RDLModel`` / ``PretrainingWrapper`` (they live in the repository's
``redelex/nn/models/rdl_model.py`` and ``experiments/pretraining/lightning_wrappers.py``),
so :class:`RDLModelRef` and :class:`PretrainingWrapperRef` below rebuild those two
thin wrappers (composition only, same modules and calls). Lightning's training loop is
left out (it only adds overhead to the reference's step).
"""

from __future__ import annotations

from typing import Any

import torch
from relbench.modeling.nn import HeteroEncoder, HeteroGraphSAGE, HeteroTemporalEncoder
from torch_frame.nn import ResNet
from torch_geometric.data import HeteroData

from redelex.nn.encoders import LinearRowEncoder  # noqa: E402  (peer package, on PYTHONPATH)
from redelex.nn.loss import ContextContrastiveLoss, EdgeContrastiveLoss, TableContrastiveLoss
from redelex.transforms import ResampleCorruptor


class RDLModelRef(torch.nn.Module):
    """redelex's ``RDLModel`` with ``rgnn_model="sage"`` (see the module docstring)."""

    def __init__(self, data: HeteroData, col_stats_dict: dict[str, dict[str, Any]],
                 tabular_model: str = "resnet", channels: int = 128, layers: int = 2, aggr: str = "sum"):
        super().__init__()
        if tabular_model == "resnet":
            cls, kwargs = ResNet, {"channels": channels, "num_layers": 4}
        elif tabular_model == "linear":
            cls, kwargs = LinearRowEncoder, {"channels": channels}
        else:
            raise ValueError(tabular_model)
        self.node_types = data.node_types
        self.edge_types = data.edge_types
        self.encoder = HeteroEncoder(
            channels=channels,
            node_to_col_names_dict={t: data[t].tf.col_names_dict for t in data.node_types},
            node_to_col_stats=col_stats_dict,
            torch_frame_model_cls=cls,
            torch_frame_model_kwargs=kwargs,
        )
        self.temporal_encoder = HeteroTemporalEncoder(
            node_types=[t for t in data.node_types if "time" in data[t]], channels=channels)
        self.rgnn = HeteroGraphSAGE(node_types=data.node_types, edge_types=data.edge_types,
                                    channels=channels, aggr=aggr, num_layers=layers)
        self.encoder.reset_parameters()
        self.temporal_encoder.reset_parameters()
        self.rgnn.reset_parameters()

    def forward(self, batch: HeteroData, entity_table: str | None = None, tf_attr: str = "tf"):
        x_dict = self.encoder(batch.collect(tf_attr))
        if entity_table and hasattr(batch[entity_table], "seed_time"):
            rel = self.temporal_encoder(batch[entity_table].seed_time, batch.collect("time"),
                                        batch.collect("batch"))
            for t, r in rel.items():
                x_dict[t] = x_dict[t] + r
        return self.rgnn(x_dict, batch.edge_index_dict)


class PretrainingWrapperRef(torch.nn.Module):
    """redelex's ``PretrainingWrapper``: backbone on clean + corrupted, three losses."""

    def __init__(self, backbone: RDLModelRef, channels: int = 128, temperature: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.table_cl = TableContrastiveLoss(channels=channels, node_types=backbone.node_types,
                                             temperature=temperature)
        self.edge_cl = EdgeContrastiveLoss(channels=channels, edge_types=backbone.edge_types,
                                           temperature=temperature)
        self.context_cl = ContextContrastiveLoss(channels=channels, node_types=backbone.node_types,
                                                 edge_types=backbone.edge_types, temperature=temperature)

    def forward(self, batch: HeteroData):
        x_dict = self.backbone(batch)
        cor_dict = self.backbone(batch, tf_attr="cor_tf")
        return x_dict, {
            "table_loss": self.table_cl(x_dict, cor_dict),
            "edge_loss": self.edge_cl(batch, x_dict),
            "context_loss": self.context_cl(batch, x_dict),
        }


def upto(data: HeteroData, max_time: int) -> HeteroData:
    """``data`` restricted to rows dated ``<= max_time`` (untimed tables whole), edges
    among kept rows, ids renumbered -- the graph ``db.upto(val_timestamp)`` gives the
    reference code. Only ``tf``, ``time``, ``num_nodes`` and ``edge_index`` are kept."""
    from relcore.sampling.batch import slice_tensor_frame

    out = HeteroData()
    new_id: dict[str, torch.Tensor] = {}
    for t in data.node_types:
        n = len(data[t].tf)
        keep = torch.arange(n) if "time" not in data[t] else (data[t].time <= max_time).nonzero().view(-1)
        remap = torch.full((n,), -1, dtype=torch.long)
        remap[keep] = torch.arange(len(keep))
        new_id[t] = remap
        out[t].tf = slice_tensor_frame(data[t].tf, keep)
        out[t].num_nodes = len(keep)
        if "time" in data[t]:
            out[t].time = data[t].time.index_select(0, keep)
    for et in data.edge_types:
        src, dst = data[et].edge_index
        s, d = new_id[et[0]][src], new_id[et[2]][dst]
        ok = (s >= 0) & (d >= 0)
        out[et].edge_index = torch.stack([s[ok], d[ok]])
    return out


def make_loader(train_data: HeteroData, seed_table: str, batch_size: int, num_samples: int,
                iterations: int, corrupt_prob: float):
    """The reference HGTLoader with its corrupting transform (module docstring)."""
    from torch_geometric.loader import HGTLoader

    corruptor = ResampleCorruptor(train_data, corrupt_prob=corrupt_prob, distribution="uniform")
    return HGTLoader(train_data, num_samples=[num_samples] * iterations, input_nodes=seed_table,
                     transform=corruptor.corrupt_data, batch_size=batch_size, shuffle=True, drop_last=True)
