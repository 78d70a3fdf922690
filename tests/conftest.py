"""Shared fixtures: the real rel-f1 database (from ../shared) and its materialised graph."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
F1_RAW_DIR = os.environ.get("RELCORE_F1_RAW_DIR", str(REPO.parent / "shared" / "data" / "ergast-f1"))


@pytest.fixture(scope="session")
def f1_raw_dir() -> str:
    if not Path(F1_RAW_DIR, "races.csv").is_file():
        pytest.fail(f"rel-f1 raw data not found at {F1_RAW_DIR} (set RELCORE_F1_RAW_DIR)")
    return F1_RAW_DIR


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    """One graph cache for the whole session, so each database is materialised once."""
    return tmp_path_factory.mktemp("relcore-cache")


@pytest.fixture(scope="session")
def f1_dataset(f1_raw_dir):
    from relcore.data import load_dataset

    return load_dataset("rel-f1", raw_dir=f1_raw_dir)


@pytest.fixture(scope="session")
def f1_graph(f1_dataset, cache_root):
    """rel-f1 up to the test timestamp (relbench's ``get_db()``), materialised."""
    from relcore.graph import build_graph

    return build_graph(f1_dataset.get_db(), cache_root=cache_root)


@pytest.fixture(scope="session")
def synthetic_dataset():
    from relcore.data import load_dataset

    return load_dataset("synthetic")


@pytest.fixture(scope="session")
def synthetic_graph(synthetic_dataset, cache_root):
    from relcore.graph import build_graph

    return build_graph(synthetic_dataset.get_db(), cache_root=cache_root)
