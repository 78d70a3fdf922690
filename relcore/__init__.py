"""relcore: relational deep learning backbones, contrastive pretraining and fine-tuning.

A relational database becomes a heterogeneous temporal graph (row = node,
primary/foreign-key pair = edge). :mod:`relcore.data` loads databases and tasks,
:mod:`relcore.graph` materialises them, :mod:`relcore.sampling` draws subgraphs,
:mod:`relcore.models` holds the backbone, :mod:`relcore.losses` the paper's equations,
and :mod:`relcore.pretrain` / :mod:`relcore.finetune` the two training loops.
"""

__version__ = "0.1.0"
