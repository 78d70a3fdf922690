"""The trial stoppers inside a real (local) Ray Tune run: each stops for its reason."""

from __future__ import annotations

import sys
import time

import pytest
import ray
from ray import tune

from sweeps.stoppers import PatienceStopper, TrialStoppers, WallTimeStopper


@pytest.fixture(scope="module")
def local_ray():
    # Ray workers cannot import this test module: ship its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def scripted(config):
    """Reports a scripted validation curve; sleeps to spend wall time."""
    for step, value in enumerate(config["curve"], start=1):
        time.sleep(config["sleep"])
        tune.report({"step": step, "monitor": value, "monitor_higher": config["higher"]})


def run(stoppers, trials, tmp_path):
    # grid over trial index; the config of each comes from `trials`
    tuner = tune.Tuner(
        tune.with_parameters(lambda c, specs: scripted(specs[c["trial"]]), specs=trials),
        param_space={"trial": tune.grid_search(list(range(len(trials))))},
        run_config=tune.RunConfig(storage_path=str(tmp_path), stop=stoppers, verbose=0),
    )
    grid = tuner.fit()
    return {r.config["trial"]: r for r in (grid[i] for i in range(len(grid)))}


def test_each_reason(local_ray, tmp_path):
    stoppers = TrialStoppers(time_limit_s=1.5, patience=3)
    trials = [
        # improves, then 3 evaluations without improvement -> early stopping at step 5
        {"curve": [1.0, 0.8, 0.9, 0.85, 0.81, 0.7, 0.6], "sleep": 0.0, "higher": 0.0},
        # keeps improving but is slow -> the wall-time limit stops it
        {"curve": [1.0 - i / 100 for i in range(40)], "sleep": 0.25, "higher": 0.0},
        # higher-is-better metric that keeps improving: runs to the end
        {"curve": [0.5, 0.6, 0.7], "sleep": 0.0, "higher": 1.0},
    ]
    results = run(stoppers, trials, tmp_path)
    by_id = {r.metrics["trial_id"]: i for i, r in results.items()}
    reasons = {by_id[tid]: why for tid, why in stoppers.reasons.items()}
    assert reasons[0].startswith("early_stopping")
    assert results[0].metrics["step"] == 5
    assert reasons[1].startswith("time_limit")
    assert results[1].metrics["step"] < 40
    assert 2 not in reasons and results[2].metrics["step"] == 3


def test_patience_counts_only_evaluations():
    reasons: dict[str, str] = {}
    stopper = PatienceStopper(2, reasons)
    assert not stopper("a", {"step": 1})  # a training step without evaluation
    assert not stopper("a", {"monitor": 0.5, "monitor_higher": 1.0})
    assert not stopper("a", {"monitor": 0.4, "monitor_higher": 1.0})
    assert stopper("a", {"monitor": 0.5, "monitor_higher": 1.0})
    assert reasons == {"a": "early_stopping (patience 2)"}


def test_wall_time_uses_trial_time():
    reasons: dict[str, str] = {}
    stopper = WallTimeStopper(10, reasons)
    assert not stopper("a", {"time_total_s": 9.9})
    assert stopper("a", {"time_total_s": 10.0})
    assert "a" in reasons


def test_patience_starts_over_when_a_trial_restarts():
    """A resumed sweep restores the stoppers with the state of trials that were running;
    a trial restarting from its first step must not inherit its old count."""
    stopper = PatienceStopper(2, {})
    assert not stopper("a", {"training_iteration": 1, "monitor": 0.9, "monitor_higher": 1.0})
    assert not stopper("a", {"training_iteration": 2, "monitor": 0.5, "monitor_higher": 1.0})
    # restart: the first attempt's best (0.9) and bad count (1) are forgotten
    assert not stopper("a", {"training_iteration": 1, "monitor": 0.6, "monitor_higher": 1.0})
    assert not stopper("a", {"training_iteration": 2, "monitor": 0.7, "monitor_higher": 1.0})
    assert not stopper("a", {"training_iteration": 3, "monitor": 0.6, "monitor_higher": 1.0})
    assert stopper("a", {"training_iteration": 4, "monitor": 0.6, "monitor_higher": 1.0})


def test_patience_after_a_rollback_to_a_checkpoint():
    """A trial restored from its checkpoint at iteration 2 reports iteration 3 again: the
    lost attempt's evaluations from 3 on no longer count, the ones up to 2 still do."""
    stopper = PatienceStopper(3, {})
    for it, value in [(1, 0.8), (2, 0.7), (3, 0.6)]:
        assert not stopper("a", {"training_iteration": it, "monitor": value, "monitor_higher": 1.0})
    # counted on top of the lost iteration 3, this would be the 3rd evaluation since the best
    assert not stopper("a", {"training_iteration": 3, "monitor": 0.75, "monitor_higher": 1.0})
    assert stopper("a", {"training_iteration": 4, "monitor": 0.74, "monitor_higher": 1.0})
    assert PatienceStopper.evaluations_since_best([(1, 3.0), (2, 2.0), (3, 2.5)], higher=False) == 1


def test_patience_stopper_pickled_by_older_code_starts_clean():
    """States saved before per-iteration histories hold running counts (``_best``,
    ``_bad``, ``_iteration``); their trials restart from step 1, so nothing carries over."""
    old = PatienceStopper(1, {})
    old.__dict__ = {"patience": 1, "reasons": {}, "_best": {"b": 0.9}, "_bad": {"b": 0},
                    "_iteration": {"b": 7}}
    old = ray.cloudpickle.loads(ray.cloudpickle.dumps(old))
    assert not old("b", {"training_iteration": 1, "monitor": 0.5, "monitor_higher": 1.0})
    assert old("b", {"training_iteration": 2, "monitor": 0.5, "monitor_higher": 1.0})
    assert set(old.__dict__) == {"patience", "reasons", "_evals"}


def test_stoppers_and_logger_share_reasons_after_unpickling(tmp_path):
    """Tune pickles the stoppers and the MLflow logger apart; unpickled, they must still
    share one table of stop reasons, or a resumed sweep logs 'completed' for every stop."""
    from sweeps.tracking import TrialRunLogger

    stoppers = TrialStoppers(time_limit_s=10, patience=1)
    logger = TrialRunLogger(f"sqlite:///{tmp_path / 'm.db'}", "x", "finetune", "parent", stoppers.reasons)
    restored_stoppers = ray.cloudpickle.loads(ray.cloudpickle.dumps(stoppers))
    restored_logger = ray.cloudpickle.loads(ray.cloudpickle.dumps(logger))
    assert restored_stoppers("t1", {"time_total_s": 11.0})
    assert restored_logger.reasons["t1"].startswith("time_limit")
    assert all(part.reasons is restored_stoppers.reasons for part in restored_stoppers.parts)

    legacy = TrialStoppers(time_limit_s=10, patience=1)  # as pickled before StopReasons: a plain dict
    legacy.reasons = {"t0": "early_stopping (patience 1)"}
    for part in legacy.parts:
        part.reasons = legacy.reasons
    restored_legacy = ray.cloudpickle.loads(ray.cloudpickle.dumps(legacy))
    assert restored_legacy.reasons is restored_logger.reasons and "t0" in restored_logger.reasons
