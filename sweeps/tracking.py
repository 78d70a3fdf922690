"""MLflow tracking: one experiment per sweep, a parent run per stage, a child run per trial.

Trial runs are written by :class:`TrialRunLogger`, Ray's own
:class:`~ray.air.integrations.mlflow.MLflowLoggerCallback` extended to (a) nest runs
under the stage's parent run, (b) find a trial's existing run by its key, so a
resumed sweep never logs a trial twice, (c) batch each report into one MLflow call,
(d) record why the trial stopped, its error when it failed, and the pretrained
backbone as an artifact.
"""

from __future__ import annotations

import ast
import math
import os
import threading
import time
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.air.integrations.mlflow import MLflowLoggerCallback

from sweeps.space import trial_config

# Where a trial runs: Tune adds node_ip and hostname to every result (node_id: the trainables).
NODE_KEYS = ("node_ip", "hostname", "node_id")


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def unflatten(params: dict[str, str]) -> dict[str, Any]:
    """MLflow's params (``flatten``-ed, values as strings) back to the nested plain data."""
    out: dict[str, Any] = {}
    for key, text in params.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        try:
            node[leaf] = ast.literal_eval(text)
        except (ValueError, SyntaxError):  # a plain string: a name, a path
            node[leaf] = text
    return out


# MLflow's UI opens an experiment without this tag on its GenAI (traces) page; with it, on
# the runs table. The value is the UI's own for "Machine learning / model training".
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def get_experiment_id(client: MlflowClient, name: str) -> str:
    """The sweep's experiment, created as a model-training one if it does not exist yet."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, tags=dict([EXPERIMENT_KIND]))


def find_run(client: MlflowClient, experiment_id: str, **tags: str):
    """The newest run of the experiment carrying all ``tags``, or None."""
    query = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=query, max_results=1,
                              order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def stage_run(client: MlflowClient, experiment_id: str, stage: str, params: dict) -> str:
    """The parent run of a stage: reused on resume, created otherwise."""
    run = find_run(client, experiment_id, kind="stage", stage=stage)
    if run is not None:
        if run.info.status != "RUNNING":
            client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id
    run = client.create_run(experiment_id, run_name=stage, tags={"kind": "stage", "stage": stage})
    _log_params(client, run.info.run_id, params)
    return run.info.run_id


def stage_wall(client: MlflowClient, parent_run_id: str) -> float:
    """The wall time a stage's earlier runs logged (0 for a new stage)."""
    return client.get_run(parent_run_id).data.metrics.get("wall_s", 0.0)


class StageClock:
    """Keeps a stage's wall time logged on its parent run while the stage runs, from a
    driver thread, at least every ``every_s`` seconds and once more when the stage ends.

    A sweep killed without warning (SIGKILL, a lost node, a batch job's hard limit) so
    keeps its wall time up to then, and the resumed run continues from it: the stage's
    busy time counts every trial, also those finished before, and the overhead share sets
    one against the other. A thread in the driver rather than a Tune callback, because
    Tune restores the callbacks a sweep started with, so a resumed sweep started by an
    older version would run without one. Use as ``with StageClock(uri, run_id) as clock:``.
    """

    def __init__(self, tracking_uri: str, parent_run_id: str, start: float | None = None,
                 every_s: float = 60.0):
        self.tracking_uri, self.parent_run_id, self.every_s = tracking_uri, parent_run_id, every_s
        self.start = start  # when this run of the stage began (default: on entering)

    def __enter__(self) -> "StageClock":
        self.client = MlflowClient(self.tracking_uri)  # its own client: the driver logs from threads
        self.prior = stage_wall(self.client, self.parent_run_id)
        self.start = time.time() if self.start is None else self.start
        self.end = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="stage-clock", daemon=True)
        self._thread.start()
        return self

    def wall(self) -> float:
        """Wall time of the stage so far (all of its runs); fixed once the clock stopped."""
        return self.prior + (self.end or time.time()) - self.start

    def _log(self) -> None:
        self.client.log_metric(self.parent_run_id, "wall_s", self.wall())

    def _tick(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self._log()
            except Exception:  # a busy store must not end the sweep; the next tick retries
                pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.end = time.time()
        self._log()


def mark_interrupted(client: MlflowClient, experiment_id: str, stage: str) -> int:
    """Trial runs a stopped sweep left RUNNING: mark them KILLED until Tune restarts them.

    Called when a stage resumes, before any trial starts, so that a store read meanwhile
    (``sweeps/status.py``) does not count them as running. Returns how many.
    """
    stale = client.search_runs([experiment_id], max_results=10_000,
                               filter_string=f"tags.kind = 'trial' and tags.stage = '{stage}' "
                                             "and attributes.status = 'RUNNING'")
    for run in stale:
        client.set_tag(run.info.run_id, "stop_reason", "interrupted (the sweep stopped; restarts on --resume)")
        client.set_terminated(run.info.run_id, status="KILLED")
    return len(stale)


def _log_params(client: MlflowClient, run_id: str, params: dict) -> None:
    flat = flatten(params)
    items = [Param(k, str(v)[:6000]) for k, v in flat.items()]
    for lo in range(0, len(items), 100):  # MLflow's batch limit
        client.log_batch(run_id, params=items[lo: lo + 100])


def numeric_metrics(result: dict) -> dict[str, float]:
    out = {}
    for k, v in flatten(result).items():
        if isinstance(v, bool):
            v = float(v)
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[k] = float(v)
    return out


class TrialRunLogger(MLflowLoggerCallback):
    """Ray's MLflow logger callback, made resumable and nested (see module docstring)."""

    def __init__(self, tracking_uri: str, experiment_name: str, stage: str, parent_run_id: str):
        super().__init__(tracking_uri=tracking_uri, experiment_name=experiment_name,
                         tags={"mlflow.parentRunId": parent_run_id, "stage": stage, "kind": "trial"})
        self.stage = stage
        self._last: dict[str, dict] = {}

    # Ray calls setup() in the driver before the first trial starts.
    def setup(self, *args, **kwargs):
        super().setup(*args, **kwargs)
        self.client = MlflowClient(self.tracking_uri)
        self.experiment_id = get_experiment_id(self.client, self.experiment_name)

    def log_trial_start(self, trial) -> None:
        if trial in self._trial_runs:
            return
        spec = trial_config(trial.config)
        key = spec.key if spec is not None else str(trial)
        # By key, not by Tune's trial id: a sweep killed before Tune's last experiment
        # snapshot recorded a trial gets that trial again under a new id when resumed.
        existing = find_run(self.client, self.experiment_id, kind="trial", stage=self.stage, trial_key=key)
        if existing is not None:  # resumed sweep: continue the same run
            run_id = existing.info.run_id
            self.client.update_run(run_id, status="RUNNING")
            if "step" in existing.data.metrics:  # it had reported: this is another attempt
                attempts = int(existing.data.tags.get("attempts", "1")) + 1
                # It continues from its last checkpoint (its last evaluation, or step 1
                # if it had none), so metric histories may repeat the steps an earlier
                # attempt ran past that point.
                self.client.set_tag(run_id, "attempts", str(attempts))
        else:
            tags = {**self.tags, "trial_id": trial.trial_id, "trial_key": key}
            for k in ("task", "regime", "table_model", "pretrain_key"):
                if getattr(spec, k, None) is not None:
                    tags[k] = str(getattr(spec, k))
            if spec is not None:
                tags["backbone"] = spec.backbone.table_model
            run_id = self.client.create_run(self.experiment_id, run_name=key, tags=tags).info.run_id
            _log_params(self.client, run_id, spec.to_dict() if spec is not None else {})
        self._trial_runs[trial] = run_id

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        run_id = self._trial_runs[trial]
        before = self._last.get(trial.trial_id, {})
        # tagged with its first result, and again if a retry lands on another node
        where = [RunTag(k, str(result[k])) for k in NODE_KEYS
                 if result.get(k) is not None and result.get(k) != before.get(k)]
        self._last[trial.trial_id] = result
        # an evaluation has its step; a closing summary, the trial's last ("steps")
        step = int(result.get("step", result.get("steps", iteration)))
        ts = int(time.time() * 1000)
        metrics = [Metric(k, v, ts, step) for k, v in numeric_metrics(result).items()
                   if not k.startswith("config.")]
        for lo in range(0, len(metrics), 500):
            self.client.log_batch(run_id, metrics=metrics[lo: lo + 500])
        if where:
            self.client.log_batch(run_id, tags=where)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        run_id = self._trial_runs[trial]
        last = self._last.get(trial.trial_id, {})
        reason = "error" if failed else last.get("done_reason", "completed")  # the loop's own
        tags = [RunTag("stop_reason", str(reason))]
        if failed:
            error = _trial_error(trial)
            tags.append(RunTag("error", error[-5000:]))
        self.client.log_batch(run_id, tags=tags)
        if not failed and self.stage == "pretrain":
            _log_checkpoint(self.client, run_id, trial)
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")


def _trial_error(trial) -> str:
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        with open(path) as fh:
            return fh.read()
    return str(getattr(trial, "error_msg", "") or "failed")


def _log_checkpoint(client: MlflowClient, run_id: str, trial) -> None:
    ckpt = trial.checkpoint
    if ckpt is None:
        return
    with ckpt.as_directory() as d:
        path = os.path.join(d, "backbone.pt")
        if os.path.exists(path):
            client.log_artifact(run_id, path, artifact_path="checkpoint")


def finish_stage(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    ts = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items()])
    client.set_terminated(run_id, status="FINISHED")

