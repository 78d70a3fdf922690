"""rel-f1 built offline by relbench's own processing reproduces the published figures."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from relcore.data import DatasetSpec, load_dataset, load_task
from relcore.data.validate import count_rows_and_links
from relcore.errors import RelcoreError

SPLITS = ("train", "val", "test")


def test_full_database_rows_and_links(f1_dataset):
    db = f1_dataset.get_db(upto_test_timestamp=False)
    assert len(db.table_dict) == 9
    assert count_rows_and_links(db) == (97_606, 227_716)


def test_database_up_to_test_timestamp(f1_dataset):
    db = f1_dataset.get_db()
    assert count_rows_and_links(db) == (74_063, 169_421)
    results = db.table_dict["results"].df
    assert len(results) == 20_323
    assert results["raceId"].nunique() == 820
    assert results["date"].max() == pd.Timestamp("2009-11-01 11:00:00")
    assert len(db.table_dict["standings"].df) == 28_115
    assert len(db.table_dict["qualifying"].df) == 4_082


def test_processing_matches_relbench(f1_dataset):
    db = f1_dataset.get_db(upto_test_timestamp=False)
    assert db.table_dict["circuits"].df["alt"].isna().sum() == 3
    assert "number" not in db.table_dict["drivers"].df.columns  # dropped: 803/857 missing
    assert "status" not in db.table_dict["constructor_results"].df.columns
    races = db.table_dict["races"].df
    quali = db.table_dict["qualifying"].df.merge(races[["raceId", "date"]], on="raceId", suffixes=("", "_race"))
    # qualifying is dated one day before its race
    assert ((quali["date_race"] - quali["date"]) == pd.Timedelta(days=1)).all()


@pytest.mark.parametrize(
    "task_name,sizes",
    [("driver-dnf", (11_411, 566, 702)), ("driver-top3", (1_353, 588, 726)),
     ("driver-position", (7_453, 499, 760))],
)
def test_task_tables(f1_raw_dir, task_name, sizes):
    spec = DatasetSpec("rel-f1", raw_dir=f1_raw_dir)
    task = load_task(spec, load_dataset(spec), task_name)
    assert tuple(len(task.get_table(s)) for s in SPLITS) == sizes


def test_relbench_metrics_evaluate(f1_raw_dir):
    spec = DatasetSpec("rel-f1", raw_dir=f1_raw_dir)
    task = load_task(spec, load_dataset(spec), "driver-dnf")
    val = task.get_table("val", mask_input_cols=False)
    perfect = val.df[task.target_col].to_numpy().astype(float)
    assert task.evaluate(perfect, val)["roc_auc"] == pytest.approx(1.0)


def test_prune_drops_future_rows(f1_dataset):
    db = f1_dataset.get_db()
    pruned = db.upto(f1_dataset.val_timestamp)  # what the backbone is built on
    for table in pruned.table_dict.values():
        if table.time_col is not None:
            assert table.df[table.time_col].max() <= f1_dataset.val_timestamp


def test_env_var_raw_dir(f1_raw_dir, monkeypatch):
    monkeypatch.setenv("RELCORE_F1_RAW_DIR", f1_raw_dir)
    assert len(load_dataset("rel-f1").get_db().table_dict) == 9


# --- bad input -------------------------------------------------------------------------

@pytest.fixture
def raw_copy(f1_raw_dir, tmp_path):
    """A scratch copy of the raw CSVs (in tmp, never in the repo) to break on purpose."""
    dst = tmp_path / "raw"
    shutil.copytree(f1_raw_dir, dst)
    return dst


def test_missing_raw_dir(tmp_path):
    with pytest.raises(RelcoreError, match="raw directory not found"):
        load_dataset("rel-f1", raw_dir=str(tmp_path / "nope"))


def test_missing_file(raw_copy):
    (raw_copy / "results.csv").unlink()
    with pytest.raises(RelcoreError, match="results.csv"):
        load_dataset("rel-f1", raw_dir=str(raw_copy))


def test_wrong_header(raw_copy):
    path = raw_copy / "drivers.csv"
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace("driverId", "driver_id")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RelcoreError, match="drivers.csv: wrong header.*driverId"):
        load_dataset("rel-f1", raw_dir=str(raw_copy))


def test_dangling_foreign_key(raw_copy):
    path = raw_copy / "results.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[:4, "raceId"] = "999999"
    df.to_csv(path, index=False)
    with pytest.raises(RelcoreError, match=r"results\.raceId -> races: 5 rows"):
        load_dataset("rel-f1", raw_dir=str(raw_copy)).get_db()


def test_unknown_dataset_and_task(f1_raw_dir):
    with pytest.raises(RelcoreError, match="unknown dataset 'rel-nope'"):
        load_dataset("rel-nope")
    spec = DatasetSpec("rel-f1", raw_dir=f1_raw_dir)
    with pytest.raises(RelcoreError, match="unknown task 'driver-nope'.*driver-dnf"):
        load_task(spec, load_dataset(spec), "driver-nope")
    with pytest.raises(RelcoreError, match="link-prediction"):
        load_task(spec, load_dataset(spec), "driver-circuit-compete")
