"""``relcore pretrain`` (wired to :mod:`relcore.pretrain`)."""

from __future__ import annotations


def add_parser(sub, add_dataset_args) -> None:
    """Registered once relcore.pretrain lands."""
