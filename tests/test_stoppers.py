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
