"""The paper's RDL backbones (attribute encoders, table model, temporal encoder,
heterogeneous GraphSAGE), the task head, and backbone checkpoints."""

from relcore.models.backbone import HeteroSAGE, RDLBackbone, RelativeTimeEncoder
from relcore.models.checkpoint import BackboneCheckpoint, load_backbone, read_checkpoint, save_backbone
from relcore.models.config import BackboneConfig
from relcore.models.head import MLPHead
from relcore.models.meta import GraphMeta
from relcore.models.table import LinearTableModel, make_table_model

__all__ = [
    "BackboneCheckpoint",
    "BackboneConfig",
    "GraphMeta",
    "HeteroSAGE",
    "LinearTableModel",
    "MLPHead",
    "RDLBackbone",
    "RelativeTimeEncoder",
    "load_backbone",
    "make_table_model",
    "read_checkpoint",
    "save_backbone",
]
