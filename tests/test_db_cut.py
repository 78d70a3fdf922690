"""--db-cut: the database the fine-tuning graph is built from, on the real rel-f1.

``test`` (relbench's default) ends at the test timestamp; ``full`` holds every row, as the
paper's code fine-tunes. Either way no seed sees a row dated after its own seed time, and
a checkpoint whose encoders were fitted to the other cut is refused in one line.
"""

from __future__ import annotations

import pytest
import torch

from relcore.data import DatasetSpec, get_db, load_task
from relcore.errors import RelcoreError
from relcore.finetune import SplitTable
from relcore.graph import build_graph
from relcore.models import BackboneConfig, RDLBackbone, GraphMeta, load_backbone, save_backbone
from relcore.sampling.temporal import TemporalNeighborSampler


@pytest.fixture(scope="module")
def f1_full_graph(f1_dataset, cache_root):
    return build_graph(get_db(f1_dataset, "full"), cache_root=cache_root)


@pytest.fixture(scope="module")
def test_seeds(f1_raw_dir, f1_dataset):
    """The first 512 test seeds of driver-dnf, taken in seed-time order from the end:
    the latest ones, which are dated furthest after the test timestamp."""
    task = load_task(DatasetSpec("rel-f1", raw_dir=f1_raw_dir), f1_dataset, "driver-dnf")
    split = SplitTable.of(task, "test")
    return split.ids[-512:], split.times[-512:]


def _timed_rows(graph, seeds, times):
    batch = TemporalNeighborSampler(graph, [128, 64], num_layers=2).sample("drivers", seeds, times, generator=0)
    out = {}
    for t in batch.node_types:
        if "time" in batch[t]:
            out[t] = (batch[t].time, batch[t].seed_time)
    return out


def test_full_cut_shows_test_seeds_rows_after_the_test_timestamp_never_after_their_own(
        f1_dataset, f1_graph, f1_full_graph, test_seeds):
    cut = int(f1_dataset.test_timestamp.timestamp())
    seeds, times = test_seeds
    assert (times > cut).all()
    full = _timed_rows(f1_full_graph, seeds, times)
    after_cut = sum(int((row_time > cut).sum()) for row_time, _ in full.values())
    assert after_cut > 1000  # races, results, standings of 2010 onwards
    for t, (row_time, seed_time) in full.items():
        assert (row_time <= seed_time).all(), t  # temporal sampling holds
    test = _timed_rows(f1_graph, seeds, times)
    for t, (row_time, _) in test.items():
        assert (row_time <= cut).all(), t  # relbench's cut: nothing after the test timestamp
    assert f1_full_graph.num_nodes("races") > f1_graph.num_nodes("races")  # the later seasons


def test_checkpoint_fitted_to_the_other_cut_is_refused_naming_the_column(f1_graph, f1_full_graph, tmp_path):
    path = save_backbone(tmp_path / "backbone.pt",
                         RDLBackbone(BackboneConfig(table_model="linear"), GraphMeta.from_graph(f1_graph)))
    with pytest.raises(RelcoreError, match=r"does not fit this graph's encoders: category vocabulary of "
                                           r"'\w+\.\w+' differs from the graph's") as e:
        load_backbone(path, f1_full_graph)
    assert "\n" not in str(e.value) and "--db-cut" in str(e.value)
    assert isinstance(load_backbone(path, f1_graph), torch.nn.Module)  # the same cut loads


def test_db_cut_is_checked():
    with pytest.raises(RelcoreError, match="db cut must be one of test, full"):
        DatasetSpec("rel-f1", db_cut="val")
