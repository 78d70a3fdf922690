"""Trial stoppers: a per-trial wall-time limit and early stopping on the validation metric.

Both are Ray Tune :class:`~ray.tune.Stopper`\\ s acting on the results trials report,
so the sweep (not only the training loop) stops trials. Every decision is kept in
``reasons`` so the MLflow run of the trial records why it ended.

Trials report ``monitor`` (the validation value that selects models) and
``monitor_higher`` (1.0 when higher is better) at every evaluation; their closing
summary (``final``) repeats the best value for searchers and is not an evaluation.

Resuming (``--resume``) restores the stoppers from Tune's experiment state, with the
state of trials that were running when the sweep stopped. Those trials continue from
their last checkpoint (every evaluation saves one), or from their first step if they had
none, and report again from the iteration after it: the patience stopper keeps each
trial's evaluations by iteration and forgets those at or after a report's iteration.
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
    """Stop a trial after ``patience`` evaluations without a new best ``monitor`` value.

    Per trial it keeps the evaluations seen, ``(training_iteration, monitor)``. A
    report at iteration :math:`i` first drops those at :math:`\ge i`: they belong to an
    attempt the trial was rolled back from (a restart from step 1 or from an earlier
    checkpoint), so a resumed trial is judged on the evaluations that led to its state.
    """

    def __init__(self, patience: int, reasons: dict[str, str]):
        self.patience = int(patience)
        self.reasons = reasons
        self._evals: dict[str, list[tuple[int, float]]] = {}

    def __setstate__(self, state: dict) -> None:
        # Experiment states saved before per-iteration histories held running counts of
        # trials that all restart from step 1 on resume (none had checkpoints): start clean.
        state = {k: v for k, v in state.items() if k not in ("_best", "_bad", "_iteration")}
        state.setdefault("_evals", {})
        self.__dict__.update(state)

    def __call__(self, trial_id: str, result: dict) -> bool:
        if result.get("final"):
            return False  # the trial's closing summary repeats its best value
        evals = self._evals.setdefault(trial_id, [])
        iteration = result.get("training_iteration")
        if iteration is None:  # not from Tune: reports arrive in order
            iteration = evals[-1][0] + 1 if evals else 1
        evals[:] = [e for e in evals if e[0] < iteration]
        if result.get("monitor") is None:
            return False  # not an evaluation step
        evals.append((iteration, float(result["monitor"])))
        if self.evaluations_since_best(evals, bool(result.get("monitor_higher", 0.0))) >= self.patience:
            self.reasons.setdefault(trial_id, f"early_stopping (patience {self.patience})")
            return True
        return False

    @staticmethod
    def evaluations_since_best(evals: list[tuple[int, float]], higher: bool) -> int:
        """How many evaluations came after the last strict improvement (the first one counts as one)."""
        best, since = math.nan, 0
        for _, value in evals:
            if math.isnan(best) or (value > best if higher else value < best):
                best, since = value, 0
            else:
                since += 1
        return since

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
