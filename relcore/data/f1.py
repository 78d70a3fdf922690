"""RelBench's ``rel-f1`` built offline from the raw Ergast CSVs.

relbench 2.1.2's :meth:`relbench.datasets.f1.F1Dataset.make_db` is the single source of
truth for the processing (dropped columns, ``\\N`` handling, race date + time,
qualifying moved back a day, ``driver_standings`` -> ``standings``). Its only network
step is ``pooch.retrieve`` of a zip whose ``raw/`` folder holds the CSVs; we answer
that call with a staging folder whose ``raw`` entry links to the user's directory, so
relbench's own code runs unchanged on local files.
"""

from __future__ import annotations

import os
import tempfile
import types
from contextlib import contextmanager
from typing import Iterator

import relbench.datasets.f1 as relbench_f1
from relbench.base import Database
from relbench.datasets.f1 import F1Dataset

from relcore.data.validate import ForeignKeyCheck
from relcore.errors import RelcoreError

RAW_DIR_ENV = "RELCORE_F1_RAW_DIR"

# Columns relbench's make_db reads from each raw file (the Ergast export's headers).
EXPECTED_COLUMNS: dict[str, tuple[str, ...]] = {
    "circuits.csv": ("circuitId", "circuitRef", "name", "location", "country", "lat", "lng", "alt", "url"),
    "constructor_results.csv": ("constructorResultsId", "raceId", "constructorId", "points", "status"),
    "constructor_standings.csv": ("constructorStandingsId", "raceId", "constructorId", "points", "position", "positionText", "wins"),
    "constructors.csv": ("constructorId", "constructorRef", "name", "nationality", "url"),
    "driver_standings.csv": ("driverStandingsId", "raceId", "driverId", "points", "position", "positionText", "wins"),
    "drivers.csv": ("driverId", "driverRef", "number", "code", "forename", "surname", "dob", "nationality", "url"),
    "qualifying.csv": ("qualifyId", "raceId", "driverId", "constructorId", "number", "position", "q1", "q2", "q3"),
    "races.csv": ("raceId", "year", "round", "circuitId", "name", "date", "time", "url", "fp1_date", "fp1_time",
                  "fp2_date", "fp2_time", "fp3_date", "fp3_time", "quali_date", "quali_time", "sprint_date", "sprint_time"),
    "results.csv": ("resultId", "raceId", "driverId", "constructorId", "number", "grid", "position", "positionText",
                    "positionOrder", "points", "laps", "time", "milliseconds", "fastestLap", "rank", "fastestLapTime",
                    "fastestLapSpeed", "statusId"),
}


def check_raw_dir(raw_dir: str) -> None:
    """Fail with one line if ``raw_dir`` lacks a file or a file has the wrong header."""
    if not os.path.isdir(raw_dir):
        raise RelcoreError(f"rel-f1 raw directory not found: {raw_dir}")
    for name, expected in EXPECTED_COLUMNS.items():
        path = os.path.join(raw_dir, name)
        if not os.path.isfile(path):
            raise RelcoreError(f"rel-f1 raw file missing: {path}")
        with open(path, encoding="utf-8", errors="replace") as fh:
            header = tuple(fh.readline().strip().split(","))
        missing = [c for c in expected if c not in header]
        if missing:
            raise RelcoreError(f"{path}: wrong header, missing columns {missing}")


@contextmanager
def _local_raw_files(raw_dir: str) -> Iterator[None]:
    """Make relbench's ``pooch.retrieve`` return a folder whose ``raw/`` is ``raw_dir``."""
    with tempfile.TemporaryDirectory(prefix="relcore-f1-") as stage:
        os.symlink(os.path.abspath(raw_dir), os.path.join(stage, "raw"))
        original = relbench_f1.pooch
        relbench_f1.pooch = types.SimpleNamespace(retrieve=lambda *args, **kwargs: stage)
        try:
            yield
        finally:
            relbench_f1.pooch = original


class LocalF1Dataset(ForeignKeyCheck, F1Dataset):
    """``rel-f1`` processed by relbench from a local folder of raw Ergast CSVs."""

    def __init__(self, raw_dir: str, cache_dir: str | None = None) -> None:
        check_raw_dir(raw_dir)
        super().__init__(cache_dir=cache_dir)
        self.raw_dir = raw_dir

    def make_db(self) -> Database:
        with _local_raw_files(self.raw_dir):
            try:
                return super().make_db()
            except RelcoreError:
                raise
            except Exception as exc:  # pandas parse errors on a corrupt CSV
                raise RelcoreError(f"rel-f1 raw files in {self.raw_dir} could not be processed: {exc}") from exc
