"""``trials.csv``: one row per finished fine-tuning trial, the record every table derives from.

A sweep writes it next to ``results.csv`` (MLflow ``summary`` artifacts and
``runs/<name>/``); :mod:`sweeps.merge` joins the files of several sweeps, so that a grid
run in parts, on different days or clusters, gives one table. ``val`` and ``test`` hold
the selection metric of the task (``metric``) at the best validation state, in the units
of ``results.csv``; every metric relbench reported follows as ``val/<m>`` / ``test/<m>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from typing import TYPE_CHECKING

import pandas as pd

from relcore.errors import RelcoreError

if TYPE_CHECKING:
    from sweeps.space import FinetuneTrial

LOWER_IS_BETTER = frozenset({"mae", "mse", "rmse"})


def higher_is_better(metric: str) -> bool:
    """The one direction rule: error metrics fall, scores (AUROC, accuracy, ...) rise."""
    return metric not in LOWER_IS_BETTER


@dataclass(frozen=True)
class TrialRow:
    dataset: str
    task: str
    backbone: str  # table model: linear | resnet
    regime: str  # B | P | PF | R
    layers: int
    aggr: str
    corruption: float  # NaN for B and R: no pretraining
    seed: int  # fine-tuning seed
    protocol: str  # the preset: paper | reference | quick
    db_cut: str  # relcore.data.get_db: test | full
    batch_order: str  # relcore.finetune.epoch_order: random | time
    key: str
    metric: str
    val: float
    test: float
    steps: int
    seconds: float
    stop_reason: str
    metrics: dict[str, float] = field(default_factory=dict)  # "val/<m>", "test/<m>"

    @classmethod
    def from_result(cls, trial: "FinetuneTrial", metrics: dict, stop_reason: str | None = None) -> "TrialRow":
        """The row of a fine-tuning trial and the metrics it reported last: its closing
        summary, or, for a trial ended from outside after an evaluation (a stopper of
        Tune's, a sweep recorded by an older relcore), that evaluation, which carries the
        best state's metrics too."""
        metric = metrics.get("metric") or ("roc_auc" if "best/val/roc_auc" in metrics else "mae")
        return cls(
            dataset=trial.dataset.name, task=trial.task, backbone=trial.backbone.table_model, regime=trial.regime,
            layers=trial.backbone.layers, aggr=trial.backbone.aggr,
            corruption=math.nan if trial.corruption is None else trial.corruption, seed=trial.finetune.seed,
            protocol=trial.protocol, db_cut=trial.dataset.db_cut, batch_order=trial.finetune.batch_order,
            key=trial.key, metric=metric,
            val=float(metrics[f"best/val/{metric}"]), test=float(metrics[f"best/test/{metric}"]),
            steps=int(metrics.get("steps", metrics.get("step", 0))),
            seconds=float(metrics.get("busy_s", metrics.get("time_total_s", math.nan))),
            stop_reason=stop_reason or str(metrics.get("done_reason", "")),
            metrics={k[len("best/"):]: float(v) for k, v in metrics.items()
                     if k.startswith(("best/val/", "best/test/"))})

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "metrics"}
        return {**out, **dict(sorted(self.metrics.items()))}


COLUMNS = [f.name for f in fields(TrialRow) if f.name != "metrics"]
CELL = ["dataset", "task", "backbone", "regime"]  # a cell of the results table
HOW = ["protocol", "db_cut", "batch_order"]  # how a cell was measured: one value each


def frame(rows: list[TrialRow]) -> pd.DataFrame:
    """Rows as ``trials.csv``'s table, in key order."""
    table = pd.DataFrame([r.to_dict() for r in rows])
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    extra = sorted(c for c in table.columns if c not in COLUMNS)
    return table[COLUMNS + extra].sort_values(CELL + ["key"], kind="mergesort").reset_index(drop=True)


def read(path: str | Path) -> pd.DataFrame:
    """One ``trials.csv``; a missing file or column is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise RelcoreError(f"trials file not found: {path}")
    try:
        table = pd.read_csv(path, dtype={"protocol": str, "db_cut": str, "batch_order": str, "stop_reason": str})
    except Exception as exc:  # noqa: BLE001 - pandas' parser errors have many types
        raise RelcoreError(f"{path}: not a trials.csv ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if "batch_order" not in table.columns:  # written before the column existed, when every run was random
        table["batch_order"] = "random"
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise RelcoreError(f"{path}: not a trials.csv, missing column(s) {', '.join(missing)}")
    return table


def check_cells(table: pd.DataFrame) -> None:
    """Refuse a table whose cells mix protocols, database cuts or batch orders, or that
    holds a trial twice."""
    for cell, g in table.groupby(CELL, sort=True):
        for what in HOW:
            values = sorted(set(g[what].fillna("").astype(str)))
            if len(values) > 1:
                raise RelcoreError(f"cell {'/'.join(map(str, cell))} mixes {what}s {' and '.join(values)}: "
                                   "merge only trials run the same way")
    dup = table[table.duplicated(["dataset", "task", "key"], keep=False)]
    if not dup.empty:
        r = dup.iloc[0]
        raise RelcoreError(f"trial {r['dataset']}/{r['key']} appears {len(dup[dup.key == r['key']])} times: "
                           "each part of a grid must run different trials")

