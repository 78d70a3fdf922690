"""A stage's wall time over several driver runs, rebuilt from the drivers' logs and MLflow.

Before ``tracking.StageClock`` (2026-11-30) a stage logged its wall time only when its
driver ended cleanly, so a sweep resumed after kills (every session end of the rel-f1
paper grid) lost the wall time of those runs, and its overhead share
(``1 - busy / (wall x slots)``) came out as unknown. This rebuilds it: each driver run
starts a Ray session, whose directory name (``/tmp/ray/session_<local time>_...``, which
Tune prints) is in the run's log; the stage was running in that driver from the later of
the session start and the stage's first trial start until the last metric any of the
stage's trials logged before the next driver run began. Work a kill cut after a trial's
last report is not in that wall time (it was redone after the resume, and the redone part
is), so the share it gives is a slight underestimate of what an unbroken clock would show.

    .venv/bin/python sweeps/stage_walls.py --name rel-f1-paper --stage finetune \\
        --mlflow-uri sqlite:////work/grid/mlruns.db --log /work/grid/log-1.txt \\
        --log /work/grid/log-2.txt --log /work/grid/log.txt --slots 2
"""

from __future__ import annotations

import argparse
import bisect
import re
from datetime import datetime, timezone
from pathlib import Path

from mlflow.tracking import MlflowClient

from sweeps.aggregate import overhead_share
from sweeps.status import trial_busy_s

SESSION = re.compile(r"/ray/session_(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)")


def driver_starts(logs: list[str]) -> list[float]:
    """Unix times of the distinct Ray sessions the logs name (Ray names them in local time)."""
    starts = set()
    for log in logs:
        for match in SESSION.finditer(Path(log).read_text(errors="replace")):
            starts.add(datetime.strptime(match.group(1), "%Y-%m-%d_%H-%M-%S").timestamp())
    return sorted(starts)


def trial_activity(client: MlflowClient, name: str, stage: str) -> tuple[float, list[float], float]:
    """(first trial start, sorted times of every trial report, busy seconds of finished trials)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        raise SystemExit(f"stage_walls: no sweep named '{name}' in this MLflow store")
    runs = client.search_runs([exp.experiment_id], f"tags.kind = 'trial' and tags.stage = '{stage}'",
                              max_results=10_000)
    if not runs:
        raise SystemExit(f"stage_walls: sweep '{name}' has no {stage} trials")
    reports = sorted(m.timestamp / 1000 for r in runs
                     for m in client.get_metric_history(r.info.run_id, "training_iteration"))
    busy = sum(trial_busy_s(r, 0.0) for r in runs if r.info.status == "FINISHED")
    return min(r.info.start_time / 1000 for r in runs), reports, busy


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--stage", default="finetune", choices=["pretrain", "finetune"])
    p.add_argument("--mlflow-uri", default="sqlite:///mlruns.db")
    p.add_argument("--log", action="append", required=True, help="a driver log (repeatable)")
    p.add_argument("--slots", type=float, required=True, help="trials the stage ran at once")
    p.add_argument("--stage-finished", action="store_true", help="the stage has finished (no caveat)")
    args = p.parse_args(argv)
    first, reports, busy = trial_activity(MlflowClient(args.mlflow_uri), args.name, args.stage)
    starts = driver_starts(args.log)
    wall = 0.0
    print("| driver run started (UTC) | stage ran from | last trial report | wall s |")
    print("|---|---|---|---|")
    for i, start in enumerate(starts):
        end_of_run = starts[i + 1] if i + 1 < len(starts) else float("inf")
        begin = max(start, first)
        lo, hi = bisect.bisect_left(reports, begin), bisect.bisect_left(reports, end_of_run)
        if hi <= lo:
            continue  # the stage did not run (or reported nothing) in this driver run
        wall += reports[hi - 1] - begin
        print(f"| {_utc(start)} | {_utc(begin)} | {_utc(reports[hi - 1])} | {reports[hi - 1] - begin:,.0f} |")
    share = overhead_share(busy, wall, args.slots)
    print(f"\n{args.stage}: wall {wall:,.0f} s ({wall / 3600:.2f} h) over the driver runs above; busy "
          f"{busy:,.0f} s in finished trials; overhead share at {args.slots:g} slots: "
          + ("unknown" if share != share else f"{share:.1%}")
          + ("" if args.stage_finished else " (trials still running are not in the busy time: "
                                            "the share is only final once the stage has finished)"))


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%m-%d %H:%M:%S")


if __name__ == "__main__":
    main()
