"""Where a sweep stands, read from its MLflow store: trials per stage, time left, and the
top-5 table over the fine-tuning trials finished so far.

A paper-scale sweep runs for hours and is resumed across interruptions; this answers
"how far is it, and what does it say yet" without touching the sweep::

    python sweeps/status.py --name rel-f1-paper --mlflow-uri sqlite:///mlruns.db [--out DIR]

With ``--out`` the partial ``results.csv`` (the sweep's own columns) and ``results.md``
are written there. Cells with fewer trials than the full grid gives are partial: the
``n`` column says how many trials each mean is over (top-5 of those finished).
"""

from __future__ import annotations

import argparse
import ast
import math
import re
import sys
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from relcore.errors import RelcoreError
from sweeps import aggregate, report, store, tracking
from sweeps.space import FinetuneTrial, Grid
from sweeps.trials import TrialRow, frame


class SweepNotFound(RelcoreError):
    """No MLflow store that can be read, or no sweep of that name in it."""


def open_sweep(name: str, mlflow_uri: str) -> "SweepRuns":
    """The runs of sweep ``name``; a missing SQLite store is refused, never created."""
    try:
        store.check_store(mlflow_uri, must_exist=True)
        client = MlflowClient(mlflow_uri)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise SweepNotFound(f"no sweep named '{name}' in {mlflow_uri}")
        return SweepRuns(client, exp.experiment_id)
    except MlflowException as exc:  # e.g. a server that answers /health but not the API
        first = str(exc).strip().splitlines()[0]
        raise SweepNotFound(f"MLflow store {mlflow_uri} cannot be read: {first}") from None


class SweepRuns:
    """Every MLflow run of one sweep, fetched once (a paper grid has ~250)."""

    def __init__(self, client: MlflowClient, experiment_id: str):
        self.runs, token = [], None
        while True:
            page = client.search_runs([experiment_id], max_results=1000, page_token=token)
            self.runs.extend(page)
            token = page.token
            if not token:
                break

    def _of(self, kind: str, stage: str | None) -> list:
        return [r for r in self.runs if r.data.tags.get("kind") == kind
                and (stage is None or r.data.tags.get("stage") == stage)]

    def stage_runs(self, stage: str) -> list:
        """The stage's parent run(s)."""
        return self._of("stage", stage)

    def trials(self, stage: str | None = None) -> list:
        return self._of("trial", stage)

    def pretrain_params(self) -> dict[str, str]:
        """What the pretraining stage's parent run logged: the grid, the dataset."""
        pre = self.stage_runs("pretrain")
        return pre[0].data.params if pre else {}

    def dataset(self) -> str:
        return self.pretrain_params().get("dataset", "?")


def planned_trials(stage_params: dict[str, str], stage: str) -> int | None:
    """Trials the stage's grid holds (from the parameters its parent run logged)."""
    grid = _grid(stage_params)
    if grid is None:
        return None
    if stage == "pretrain":
        return 0 if "pretrained_from" in stage_params else grid.pretrain_trials()
    tasks = [t for t in stage_params.get("tasks", "").split(",") if t]
    return len(tasks) * grid.finetune_trials_per_task()


def trial_busy_s(run, default: float = math.nan) -> float:
    """A trial's busy seconds: its summary's ``busy_s``, else Tune's ``time_total_s`` (a trial
    cut by a stop has sent no summary yet)."""
    return run.data.metrics.get("busy_s", run.data.metrics.get("time_total_s", default))


def trial_layers(run) -> int | None:
    """GNN depth from the trial key (``...-L3-...``), which sets a trial's time and memory."""
    found = re.search(r"-L(\d+)-", run.data.tags.get("trial_key", ""))
    return int(found.group(1)) if found else None


def stage_table(runs: SweepRuns) -> pd.DataFrame:
    """One row per stage: planned, finished, running, failed trials and busy time."""
    rows, first_params = [], None
    for stage in ("pretrain", "finetune"):
        parents = runs.stage_runs(stage)
        if parents and first_params is None:
            first_params = parents[0].data.params  # the fine-tuning grid is the pretraining one
        trials = runs.trials(stage)
        status = pd.Series([r.info.status for r in trials], dtype=object)
        busy = [trial_busy_s(r)
                for r in trials if r.info.status == "FINISHED"]
        finished = int((status == "FINISHED").sum())
        params = parents[0].data.params if parents else first_params
        planned = planned_trials(params, stage) if params else None
        done = parents[0].data.metrics if parents and parents[0].info.status == "FINISHED" else {}
        wall, overhead = done.get("wall_s", math.nan), math.nan
        if {"busy_s", "wall_s", "slots"} <= done.keys():  # the sweep's own rule, also for older logs
            overhead = aggregate.overhead_share(done["busy_s"], wall, done["slots"])
            wall = wall if not math.isnan(overhead) else math.nan  # lost to a kill: not the stage's wall
        rows.append({"stage": stage, "planned": planned, "finished": finished,
                     "running": int((status == "RUNNING").sum()), "failed": int((status == "FAILED").sum()),
                     "mean_busy_s": float(pd.Series(busy).mean()) if busy else math.nan,
                     # a finished stage: its wall time and the share of it that was not trial work
                     "wall_s": wall, "overhead_share": overhead})
    table = pd.DataFrame(rows)
    table["planned"] = table["planned"].astype("Int64")
    return table


def _grid(stage_params: dict[str, str]) -> Grid | None:
    try:
        return Grid(**{k.split(".", 1)[1]: ast.literal_eval(v) for k, v in stage_params.items()
                       if k.startswith("grid.")})
    except (ValueError, SyntaxError, TypeError):
        return None


def time_left(runs: SweepRuns, stages: pd.DataFrame, params: dict[str, str]) -> tuple[float, list[str]]:
    """CPU-seconds the unfinished trials need, and the groups it could not estimate.

    Trial cost depends most on the backbone and the GNN depth (a 3-hop rel-f1 batch is
    ~33x a 2-hop one), so each (stage, backbone, layers) group is priced by its own
    finished trials; the grid gives every group the same number of trials.
    """
    grid = _grid(params)
    if grid is None:
        return 0.0, ["the grid (stage parameters unreadable)"]
    busy: dict[tuple, list[float]] = {}
    for r in runs.trials():
        layers = trial_layers(r)
        if r.info.status == "FINISHED" and layers:
            backbone = r.data.tags.get("table_model") or r.data.tags.get("backbone")
            group = (r.data.tags.get("stage"), backbone, layers)
            busy.setdefault(group, []).append(trial_busy_s(r, 0.0))
    seconds, unknown = 0.0, []
    for _, s in stages.iterrows():
        if s["planned"] is None or pd.isna(s["planned"]):
            continue
        per_group = s["planned"] / (len(grid.backbones) * len(grid.layers))
        for backbone in grid.backbones:
            for layers in grid.layers:
                done = busy.get((s["stage"], backbone, layers), [])
                left = per_group - len(done)
                if left <= 0:
                    continue
                if done:
                    seconds += left * sum(done) / len(done)
                else:
                    unknown.append(f"{s['stage']} {backbone} L{layers} ({left:.0f} trials)")
    return seconds, unknown


def memory_by_depth(runs: SweepRuns) -> dict[tuple[str, int], float]:
    """Largest worker RSS (GiB) any trial reported at its last evaluation, per (stage, layers).

    Depth sets a trial's memory as it sets its time (a 3-hop rel-f1 batch is ~33x a
    2-hop one); the largest value is what ``--memory-per-trial`` has to cover.
    """
    peak: dict[tuple[str, int], float] = {}
    for r in runs.trials():
        layers = trial_layers(r)
        rss = r.data.metrics.get("rss_gib")
        if layers and rss is not None:
            group = (r.data.tags.get("stage"), layers)
            peak[group] = max(peak.get(group, 0.0), rss)
    return peak


def trial_slots(runs: SweepRuns, stages: pd.DataFrame) -> int:
    """Trials at once: as the sweep logged it for a finished stage, else those running now
    (a killed sweep's trials stay RUNNING in MLflow until resumed, so logged comes first)."""
    logged = [r.data.metrics["slots"] for r in runs.stage_runs("pretrain") + runs.stage_runs("finetune")
              if "slots" in r.data.metrics]
    return int(max(logged, default=0)) or max(int(stages["running"].sum()), 1)


def finished_finetune_trials(runs: SweepRuns) -> pd.DataFrame:
    """Finished fine-tuning trials as ``trials.csv`` rows (:mod:`sweeps.trials`), rebuilt
    from each trial run's params (its :class:`~sweeps.space.FinetuneTrial`, flattened) and
    its last metrics."""
    rows = []
    for r in runs.trials("finetune"):
        if r.info.status != "FINISHED":
            continue
        trial = FinetuneTrial.from_dict(tracking.unflatten(r.data.params))
        rows.append(TrialRow.from_result(trial, r.data.metrics, stop_reason=r.data.tags.get("stop_reason")))
    return frame(rows)


def trial_list(runs: SweepRuns) -> pd.DataFrame:
    """Every trial run: stage, key, status, last step, best validation value, busy time and
    the worker's memory at its last evaluation."""
    rows = []
    for r in runs.trials():
        m = r.data.metrics
        best = next((m[k] for k in ("best/val/loss", "best/val/roc_auc", "best/val/mae") if k in m), math.nan)
        rows.append({"stage": r.data.tags.get("stage"), "key": r.data.tags.get("trial_key"),
                     "status": r.info.status, "stop": r.data.tags.get("stop_reason", ""),
                     "step": int(m.get("step", 0)), "best_val": best,
                     "busy_s": trial_busy_s(r),
                     "rss_gib": m.get("rss_gib", math.nan)})
    table = pd.DataFrame(rows, columns=["stage", "key", "status", "stop", "step", "best_val", "busy_s", "rss_gib"])
    return table.sort_values(["stage", "key"], ascending=[False, True], kind="mergesort")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="the sweep's --name (its MLflow experiment)")
    p.add_argument("--mlflow-uri", default="sqlite:///mlruns.db")
    p.add_argument("--slots", type=int, default=0, help="trials run at once (default: as the sweep logged it, else those running now)")
    p.add_argument("--out", help="write the partial results.csv and results.md here")
    p.add_argument("--trials", action="store_true", help="also list every trial (best/val is loss "
                   "for pretraining, the task's metric for fine-tuning)")
    args = p.parse_args(argv)
    if args.slots < 0:
        p.error("--slots must be >= 0 (0: as the sweep logged it)")

    try:
        runs = open_sweep(args.name, args.mlflow_uri)
    except RelcoreError as e:  # SweepNotFound, or a store that cannot work
        print(f"status: {e}", file=sys.stderr)
        return 2
    stages = stage_table(runs)
    dataset = runs.dataset()
    slots = args.slots or trial_slots(runs, stages)
    print(f"sweep '{args.name}' on {dataset} ({args.mlflow_uri})")
    print(stages.to_string(index=False))
    left, unknown = time_left(runs, stages, runs.pretrain_params())
    if left or unknown:
        print(f"time left at {slots} trial(s) at once, from the mean busy time of finished trials of the same "
              f"backbone and depth: ~{left / slots / 3600:.1f} h"
              + (f", plus groups with no finished trial yet: {', '.join(unknown)}" if unknown else ""))

    if memory := memory_by_depth(runs):
        print("worker memory at the last evaluation, largest over trials: "
              + ", ".join(f"{stage} L{layers} {gib:.1f} GiB" for (stage, layers), gib in sorted(
                  memory.items(), key=lambda kv: (kv[0][0] != "pretrain", kv[0][1])))
              + " (--memory-per-trial reserves it per trial)")
    if args.trials:
        print(trial_list(runs).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    table = finished_finetune_trials(runs)
    results = aggregate.top_k(table)
    if results.empty:
        print("no fine-tuning trial has finished yet")
        return 0
    print(report.results_markdown(results, table))
    if args.out:
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            table.to_csv(out / "trials.csv", index=False)
            results.to_csv(out / "results.csv", index=False)
            (out / "results.md").write_text(report.results_markdown(results, table) + "\n")
        except OSError as e:
            print(f"status: cannot write to --out {out}: {e.strerror or e}", file=sys.stderr)
            return 2
        print(f"status: wrote {out / 'trials.csv'}, {out / 'results.csv'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
