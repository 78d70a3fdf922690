"""``relcore finetune`` (wired to :mod:`relcore.finetune`)."""

from __future__ import annotations


def add_parser(sub, add_dataset_args) -> None:
    """Registered once relcore.finetune lands."""
