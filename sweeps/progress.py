"""One progress line per finished trial: done / running / total, best so far, elapsed."""

from __future__ import annotations

import sys
import time

from ray.tune import Callback

from sweeps.space import trial_config


class ProgressLine(Callback):
    def __init__(self, stage: str, total: int):
        self.stage, self.total = stage, total
        self.start = time.time()
        self.running: set[str] = set()
        self.done = self.failed = 0
        self.best: dict[str, tuple[float, str]] = {}  # per task (pretraining: one entry)
        self._last: dict[str, dict] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._last[trial.trial_id] = result

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self._count(trials, trial, "TERMINATED")
        last = self._last.get(trial.trial_id, {})
        value = last.get("monitor_best", last.get("monitor"))
        if value is not None:
            value, higher = float(value), bool(last.get("monitor_higher"))
            spec = trial_config(trial.config)
            group, key = getattr(spec, "task", self.stage), getattr(spec, "key", trial.trial_id)
            old = self.best.get(group)
            if old is None or (value > old[0] if higher else value < old[0]):
                self.best[group] = (value, key)
        self._print()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self._count(trials, trial, "ERROR")
        self._print()

    def _count(self, trials, trial, status: str) -> None:
        """Finished and failed trials from Tune's list, so a resumed stage counts those
        that finished before the interruption too (this callback only saw the rest)."""
        done = {t.trial_id for t in trials if t.status == "TERMINATED" and t is not trial}
        failed = {t.trial_id for t in trials if t.status == "ERROR" and t is not trial}
        (failed if status == "ERROR" else done).add(trial.trial_id)  # whether or not Tune set its status yet
        self.done, self.failed = len(done), len(failed)

    def _print(self) -> None:
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.time() - self.start))
        best = "".join(f", best {g}: {v:.4f} ({k})" for g, (v, k) in sorted(self.best.items()))
        print(f"[{self.stage}] {self.done + self.failed}/{self.total} finished ({self.failed} failed), "
              f"{len(self.running)} running{best}, elapsed {elapsed}", file=sys.stderr, flush=True)
