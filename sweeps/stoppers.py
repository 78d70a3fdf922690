"""Trial stoppers: a per-trial wall-time limit and early stopping on the validation metric.

Both are Ray Tune :class:`~ray.tune.Stopper`\\ s acting on the results trials report,
so the sweep (not only the training loop) stops trials. Every decision is kept in
``reasons`` so the MLflow run of the trial records why it ended.

Trials report ``monitor`` (the validation value that selects models) and
``monitor_higher`` (1.0 when higher is better) at every evaluation; their closing
summary (``final``) repeats the best value for searchers and is not an evaluation.

Resuming (``--resume``) restores the stoppers from Tune's experiment state, with the
state of trials that were running when the sweep stopped. Those trials restart from
their first step, so a stopper forgets a trial whose ``training_iteration`` is 1 again
or goes back.
"""

from __future__ import annotations

import math

from ray.tune import Stopper


class StopReasons(dict):
    """Why each trial was stopped (trial id -> reason), written by the stoppers and read
    by the MLflow logger.

    Tune pickles the stoppers (in its experiment state) apart from the callbacks (in
    ``tuner.pkl``), so after a resume each would hold its own copy and the logger would
    never see a reason. Every copy unpickles to the process's one instance instead.
    Trial ids carry their experiment's prefix, so one table serves every stage.
    """

    def __reduce__(self):
        return (shared_stop_reasons, (dict(self),))


_SHARED: StopReasons | None = None


def shared_stop_reasons(items: dict[str, str] | None = None) -> StopReasons:
    """The process's :class:`StopReasons`, created on first use and updated with ``items``."""
    global _SHARED
    if _SHARED is None:
        _SHARED = StopReasons()
    _SHARED.update(items or {})
    return _SHARED


class WallTimeStopper(Stopper):
    """Stop a trial once its own wall time (``time_total_s``) exceeds ``limit_s``."""

    def __init__(self, limit_s: float, reasons: dict[str, str]):
        self.limit_s = float(limit_s)
        self.reasons = reasons

    def __call__(self, trial_id: str, result: dict) -> bool:
        if result.get("time_total_s", 0.0) >= self.limit_s:
            self.reasons.setdefault(trial_id, f"time_limit ({self.limit_s:.0f}s)")
            return True
        return False

    def stop_all(self) -> bool:
        return False


class PatienceStopper(Stopper):
    """Stop a trial after ``patience`` evaluations without a new best ``monitor`` value."""

    def __init__(self, patience: int, reasons: dict[str, str]):
        self.patience = int(patience)
        self.reasons = reasons
        self._best: dict[str, float] = {}
        self._bad: dict[str, int] = {}
        self._iteration: dict[str, int] = {}

    def __setstate__(self, state: dict) -> None:  # experiment states saved before _iteration
        self.__dict__.update(state)
        self.__dict__.setdefault("_iteration", {})

    def __call__(self, trial_id: str, result: dict) -> bool:
        iteration = result.get("training_iteration")
        if iteration is not None:
            # a first report, or one going back: the trial (re)started from scratch
            if iteration == 1 or iteration <= self._iteration.get(trial_id, 0):
                self._best.pop(trial_id, None)
                self._bad.pop(trial_id, None)
            self._iteration[trial_id] = iteration
        if result.get("monitor") is None or result.get("final"):
            return False  # not an evaluation step, or the trial's closing summary
        value, higher = float(result["monitor"]), bool(result.get("monitor_higher", 0.0))
        patience = self.patience
        best = self._best.get(trial_id, math.nan)
        if math.isnan(best) or (value > best if higher else value < best):
            self._best[trial_id], self._bad[trial_id] = value, 0
            return False
        self._bad[trial_id] = self._bad.get(trial_id, 0) + 1
        if self._bad[trial_id] >= patience:
            self.reasons.setdefault(trial_id, f"early_stopping (patience {patience})")
            return True
        return False

    def stop_all(self) -> bool:
        return False


class TrialStoppers(Stopper):
    """Wall time and patience together; ``reasons[trial_id]`` says which fired."""

    def __init__(self, time_limit_s: float, patience: int):
        self.reasons = shared_stop_reasons()
        self.parts = [WallTimeStopper(time_limit_s, self.reasons), PatienceStopper(patience, self.reasons)]

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        # experiment states saved before StopReasons hold a plain dict: share it too
        self.reasons = shared_stop_reasons(self.reasons)
        for part in self.parts:
            part.reasons = self.reasons

    def __call__(self, trial_id: str, result: dict) -> bool:
        return any([s(trial_id, result) for s in self.parts])  # list: every stopper sees every result

    def stop_all(self) -> bool:
        return False
