"""tracking.StageClock: a stage's wall time survives a kill without warning."""

from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

from sweeps import tracking


def _history(client: MlflowClient, run_id: str) -> list[float]:
    logged = sorted(client.get_metric_history(run_id, "wall_s"), key=lambda m: (m.timestamp, m.value))
    return [m.value for m in logged]


def test_wall_time_is_logged_while_the_stage_runs_and_continued_on_resume(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    parent = client.create_run(client.create_experiment("clock"), tags={"kind": "stage"}).info.run_id
    start = time.time()
    with tracking.StageClock(uri, parent, start=start, every_s=0.3) as clock:
        time.sleep(2.0)
        # What a driver killed now would leave: the values logged while it ran.
        during = _history(client, parent)
        assert len(during) >= 3 and during == sorted(during), during
        assert 0.3 <= during[0] and during[-1] <= time.time() - start
    first = clock.wall()
    assert _history(client, parent)[-1] == first >= 2.0  # and the closing value on the way out

    # The resumed run's clock continues from the last logged value.
    with tracking.StageClock(uri, parent, every_s=60.0) as resumed:
        assert resumed.prior == first
        time.sleep(0.2)
    assert tracking.stage_wall(client, parent) == resumed.wall() >= first + 0.2


def test_overhead_share_is_unknown_when_wall_time_was_lost():
    import math

    from sweeps.aggregate import overhead_share

    assert overhead_share(busy=15.0, wall=10.0, slots=2) == 0.25
    assert overhead_share(busy=20.0, wall=10.0, slots=2) == 0.0
    # more trial time than slot time: a SIGKILLed run's wall time is missing, not a negative overhead
    assert math.isnan(overhead_share(busy=25.0, wall=10.0, slots=2))
    assert math.isnan(overhead_share(busy=0.0, wall=0.0, slots=2))
