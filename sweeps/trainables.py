"""Ray Tune function trainables that call relcore's loops as library functions.

Per-trial setup (loading the database, materialising tensor frames, building CSR
arrays) is paid once per worker process: ``worker_graph`` keeps the graph of each
dataset in a module-level cache, Tune reuses the worker actors between trials, and
the tensor frames themselves come from relcore's on-disk cache. Each trial reports
``setup_s`` so the sweep can tell how much wall time was not training.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import psutil
import pyarrow.fs
import ray
import torch
from ray import tune

from relcore.data import DatasetSpec, get_db, load_dataset, load_task
from relcore.finetune import finetune, main_metric
from relcore.graph import build_graph
from relcore.pretrain import pretrain
from sweeps.space import FinetuneTrial, PretrainTrial, trial_config

STATE_FILE = "state.pt"  # the loop's resumable state, in trial checkpoints
FAIL_ENV = "RELCORE_SWEEP_FAIL_KEY"  # tests inject a failing trial by its key
FAIL_ONCE_ENV = "RELCORE_SWEEP_FAIL_ONCE_KEYS"  # ... and trials failing once, after an evaluation


@lru_cache(maxsize=4)
def _dataset_and_graph(name: str, raw_dir: str | None, time_cols: tuple[str, ...], db_cut: str):
    spec = DatasetSpec(name, raw_dir=raw_dir, time_cols=time_cols, db_cut=db_cut)
    dataset = load_dataset(spec)
    graph = build_graph(get_db(dataset, db_cut))
    return spec, dataset, graph


def worker_graph(spec: DatasetSpec):
    """(spec, dataset, graph) for a dataset spec, built once per worker process."""
    return _dataset_and_graph(*_dataset_key(spec))


def _dataset_key(spec: DatasetSpec) -> tuple:
    return spec.name, spec.raw_dir, spec.time_cols, spec.db_cut


@lru_cache(maxsize=16)
def _task(dataset_key: tuple, task_name: str):
    spec, dataset, _ = _dataset_and_graph(*dataset_key)
    return load_task(spec, dataset, task_name)


def _threads() -> None:
    cpus = int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1)) \
        if tune.get_context() else 1
    torch.set_num_threads(max(1, cpus))


def _where() -> dict:
    """The Ray node a trial runs on (Tune itself adds node_ip and hostname to each result)."""
    return {"node_id": ray.get_runtime_context().get_node_id()}


def _memory() -> dict:
    """The worker's resident memory now, in GiB: what Ray's memory monitor weighs, and
    what ``--memory-per-trial`` should cover (a reused worker keeps heap it grew for an
    earlier trial, so this is the process's, not only the trial's)."""
    return {"rss_gib": psutil.Process().memory_info().rss / 2**30}


def _maybe_fail(trial: PretrainTrial | FinetuneTrial) -> None:
    if os.environ.get(FAIL_ENV) and os.environ[FAIL_ENV] == trial.key:
        raise RuntimeError(f"injected failure in trial {trial.key}")


def report_with_files(metrics: dict, workdir: Path, files: dict[str, str | os.PathLike]) -> None:
    """``tune.report`` with a checkpoint holding ``files`` (name -> path), if any.

    Tune copies the checkpoint to the sweep's storage before ``report`` returns, so the
    local directory is removed right after: a trial keeps no copies on its node.
    """
    if not files:
        tune.report(metrics)
        return
    ckpt_dir = Path(tempfile.mkdtemp(prefix="ckpt-", dir=workdir))
    try:
        for name, src in files.items():
            shutil.copy(src, ckpt_dir / name)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(ckpt_dir)))
    finally:
        shutil.rmtree(ckpt_dir, ignore_errors=True)


def _restore(checkpoint: tune.Checkpoint, targets: dict[str, Path]) -> None:
    """Copy a restored trial's checkpoint files to ``targets`` (name -> local path), so
    that its loop continues from them. A checkpoint that is gone (deleted by hand, or in
    the instant between Tune replacing it and saving its experiment state) starts the
    trial over rather than failing it."""
    if checkpoint.filesystem.get_file_info(checkpoint.path).type == pyarrow.fs.FileType.NotFound:
        print(f"relcore: checkpoint {checkpoint.path} is gone; the trial starts over", file=sys.stderr)
        return
    with checkpoint.as_directory() as ckpt_dir:
        for name, target in targets.items():
            if Path(ckpt_dir, name).is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(Path(ckpt_dir, name), target)


def _maybe_fail_once(trial: PretrainTrial | FinetuneTrial, restored, files: dict) -> None:
    keys = os.environ.get(FAIL_ONCE_ENV, "").split(",")
    if STATE_FILE in files and restored is None and trial.key in keys:
        raise RuntimeError(f"injected failure in trial {trial.key} after an evaluation")


def pretrain_trainable(config: dict) -> None:
    """One pretraining trial, resumable mid-run like :func:`finetune_trainable`.

    Every evaluation reports a checkpoint with the best backbone so far
    (``backbone.pt``, what fine-tuning reads) and the loop's resumable state.
    """
    trial = trial_config(config)
    t0 = time.perf_counter()
    _threads()
    _, dataset, graph = worker_graph(trial.dataset)
    setup_s = time.perf_counter() - t0
    _maybe_fail(trial)
    max_time = int(dataset.val_timestamp.timestamp())  # pretrain only on rows <= val time
    workdir = Path(tempfile.mkdtemp(prefix="relcore-pretrain-"))
    best_path, state_path = workdir / "run" / "backbone.pt", workdir / STATE_FILE
    restored = tune.get_checkpoint()
    if restored is not None:
        _restore(restored, {"backbone.pt": best_path, STATE_FILE: state_path})

    def report(step: int, metrics: dict, checkpoint: str | None) -> None:
        if "val/loss" not in metrics:
            return None  # Tune sees evaluations only; per-step metrics stay in history
        out = {**metrics, "monitor": metrics["val/loss"], "monitor_best": metrics["best/val/loss"],
               "monitor_higher": 0.0, "setup_s": setup_s, **_where(), **_memory()}
        files = {"backbone.pt": best_path} if checkpoint else {}
        if checkpoint == str(state_path):
            files[STATE_FILE] = state_path
        report_with_files(out, workdir, files)
        _maybe_fail_once(trial, restored, files)
        return None

    try:
        result = pretrain(graph, trial.backbone, trial.pretrain, max_time=max_time,
                          out_dir=best_path.parent, callback=report, state_path=state_path)
        summary = {"done_reason": result.stop_reason, "steps": result.steps, **_where(),
                   "busy_s": result.seconds, "setup_s": setup_s, "monitor_best": result.best["loss"],
                   "monitor": result.best["loss"], "final": 1.0,
                   **{f"best/val/{k}": v for k, v in result.best.items()}}
        tune.report(summary)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def finetune_trainable(config: dict) -> None:
    """One fine-tuning trial, resumable mid-run.

    Every evaluation reports a checkpoint with the loop's resumable state
    (:mod:`relcore.resume`); a trial restarted by ``--resume``, or by Tune after a
    failure, continues from its last one with the result it would have had
    uninterrupted (:class:`DropLoopState` removes it once the trial has finished).
    """
    trial = trial_config(config)
    t0 = time.perf_counter()
    _threads()
    _, _, graph = worker_graph(trial.dataset)
    task = _task(_dataset_key(trial.dataset), trial.task)
    setup_s = time.perf_counter() - t0
    _maybe_fail(trial)
    metric, higher = main_metric(task)
    workdir = Path(tempfile.mkdtemp(prefix="relcore-finetune-"))
    state_path = workdir / STATE_FILE
    restored = tune.get_checkpoint()
    if restored is not None:
        _restore(restored, {STATE_FILE: state_path})

    def report(step: int, metrics: dict, checkpoint: str | None) -> None:
        if f"val/{metric}" not in metrics:
            return None
        # monitor_best at every evaluation: the progress line reads it before the closing summary
        out = {**metrics, "monitor": metrics[f"val/{metric}"], "monitor_best": metrics[f"best/val/{metric}"],
               "monitor_higher": float(higher), "setup_s": setup_s, **_where(), **_memory()}
        files = {STATE_FILE: state_path} if checkpoint else {}
        report_with_files(out, workdir, files)
        _maybe_fail_once(trial, restored, files)
        return None

    def run(checkpoint_path: str | None):
        return finetune(graph, task, trial.task, trial.finetune, backbone_config=trial.backbone,
                        checkpoint=checkpoint_path, callback=report, state_path=state_path)

    try:
        if trial.checkpoint is None:
            result = run(None)
        else:
            # Works for a shared filesystem path and for any pyarrow-fs URI alike.
            with tune.Checkpoint(trial.checkpoint).as_directory() as ckpt_dir:
                result = run(os.path.join(ckpt_dir, "backbone.pt"))
        summary = {"done_reason": result.stop_reason, "steps": result.steps, "busy_s": result.seconds,
                   "setup_s": setup_s, "metric": metric, **_where(), "monitor_best": result.val[metric],
                   "monitor": result.val[metric], "final": 1.0, "monitor_higher": float(higher),
                   **{f"best/val/{k}": v for k, v in result.val.items()},
                   **{f"best/test/{k}": v for k, v in result.test.items()}}
        tune.report(summary)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class DropLoopState(tune.Callback):
    """Removes the loop state from a finished trial's last checkpoint.

    Tune keeps each trial's latest checkpoint; a finished trial is never resumed, so its
    loop state (weights, optimiser moments, best state) would only fill the storage,
    once per trial of the grid. What the checkpoint finished with otherwise stays (pretraining: ``backbone.pt``).
    """

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        ckpt = trial.checkpoint
        if ckpt is None:
            return
        path = f"{ckpt.path.rstrip('/')}/{STATE_FILE}"
        if ckpt.filesystem.get_file_info(path).type == pyarrow.fs.FileType.File:
            ckpt.filesystem.delete_file(path)
