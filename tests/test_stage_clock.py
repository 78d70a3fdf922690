"""tracking.StageClock: a stage's wall time survives a kill without warning."""

from __future__ import annotations

import sys
import time

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray import tune

from sweeps import tracking


@pytest.fixture(scope="module")
def local_ray():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def sleeper(config):
    time.sleep(config["sleep"])
    tune.report({"step": 1})


def test_wall_time_is_logged_while_the_stage_runs_and_continued_on_resume(local_ray, tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    exp = client.create_experiment("clock")
    parent = client.create_run(exp, tags={"kind": "stage"}).info.run_id
    clock = tracking.StageClock(f"sqlite:///{tmp_path / 'mlruns.db'}", parent, every_s=0.5)
    start = time.time()
    tune.Tuner(sleeper, param_space={"sleep": tune.grid_search([1.0, 1.5, 2.0, 2.5])},
               tune_config=tune.TuneConfig(max_concurrent_trials=2),
               run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), callbacks=[clock],
                                         verbose=0)).fit()
    elapsed = time.time() - start
    # No closing log: this is what a SIGKILLed driver leaves behind.
    logged = sorted(client.get_metric_history(parent, "wall_s"), key=lambda m: (m.timestamp, m.value))
    history = [m.value for m in logged]
    assert len(history) >= 4  # at least one per finished trial
    assert history == sorted(history)
    assert 2.5 <= history[-1] <= elapsed

    # The resumed run's clock (Tune restores the callback object) continues from there.
    resumed = tracking.StageClock(f"sqlite:///{tmp_path / 'mlruns.db'}", parent)
    resumed.setup()
    assert resumed.prior == history[-1]
    time.sleep(0.2)
    resumed.on_trial_complete(0, [], None)
    assert tracking.stage_wall(client, parent) >= history[-1] + 0.2
