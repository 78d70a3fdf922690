"""The sweep driver behind ``run_grid.py``: validation, stages, aggregation, summary."""

from __future__ import annotations

import math
import os
import shutil
import signal
import threading
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray import tune
from ray.exceptions import OutOfMemoryError

from relcore.data import DatasetSpec, entity_task_names, get_db, load_dataset, load_task
from relcore.errors import RelcoreError
from relcore.finetune import train_rows
from relcore.graph import build_graph
from sweeps import aggregate, report, space, store, tracking, trials
from sweeps.aggregate import overhead_share
from sweeps.cluster import check_trial_fits, connect
from sweeps.progress import ProgressLine
from sweeps.trainables import DropLoopState, finetune_trainable, pretrain_trainable


def _split(text: str | None, cast=str) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(cast(v.strip()) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise RelcoreError(f"bad list value '{text}': {exc}") from exc


def _causes(exc: BaseException) -> list[BaseException]:
    """An exception and the ones it was raised from or while handling, outermost first."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _why_tune_failed(exc: BaseException, width: int = 200) -> str:
    """One short line for an exception out of ``tuner.fit()``.

    Ray's messages run to dozens of lines of memory tables, and what Tune raises is often a
    by-product (a KeyError for a trial it lost track of) of the error that matters, so an
    out-of-memory kill anywhere in the chain is named instead, with what to do about it.
    """
    chain = _causes(exc)
    oom = next((e for e in chain if isinstance(e, OutOfMemoryError)), None)
    shown = oom or exc
    text = str(shown).strip().splitlines()[0] if str(shown).strip() else ""
    text = f"{type(shown).__name__}: {text.removeprefix('Caught unexpected exception: ')}"
    if len(text) > width:  # Ray's first lines go on with node IDs and sizes after the first sentence
        sentence = text.find(". ")
        text = text[:sentence] if 0 < sentence < width else text[: width - 3] + "..."
    if oom is not None:
        text += ("; the node ran out of memory: give --memory-per-trial (GiB per trial) so that "
                 "Ray runs fewer trials at once")
    return text


def _without_limits(part):
    """A trial's config part without its trial limit, which changes no result of a finished trial."""
    return replace(part, time_limit_s=0.0) if hasattr(part, "time_limit_s") else part


def _is_uri(path: str) -> bool:
    return "://" in path


def check_storage(storage: str) -> str:
    """Absolute path (or URI) of a writable Tune storage location."""
    if _is_uri(storage):
        import pyarrow.fs

        try:
            fs, root = pyarrow.fs.FileSystem.from_uri(storage)
            fs.create_dir(root, recursive=True)
            with fs.open_output_stream(f"{root}/.relcore-probe") as fh:
                fh.write(b"ok")
            fs.delete_file(f"{root}/.relcore-probe")
        except Exception as exc:
            raise RelcoreError(f"storage {storage} is not writable: {exc}") from exc
        return storage
    path = Path(storage).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".relcore-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RelcoreError(f"storage path {path} is not writable: {exc.strerror or exc}") from exc
    return str(path)


@dataclass(frozen=True)
class SweepOptions:
    """What a user asks of a sweep: ``run_grid.py``'s options, typed, checked on construction."""

    name: str = "relcore-sweep"
    dataset: str = "synthetic"
    raw_dir: str | None = None
    time_col: tuple[str, ...] = ()
    preset: str = "quick"
    tasks: str | None = None  # comma-separated; None: the preset's
    backbones: str | None = None  # grid overrides, comma-separated
    layers: str | None = None
    aggr: str | None = None
    corruption: str | None = None
    seeds: int | None = None
    finetune_seeds: int | None = None
    db_cut: str | None = None  # None: the preset's
    search: str = "grid"
    num_samples: int = 8
    pretrain_steps: int | None = None
    finetune_steps: int | None = None
    pretrain_time_limit: float = 4 * 3600.0
    finetune_time_limit: float = 2 * 3600.0
    finetune_precision: str = "fp32"
    batch_order: str = "random"
    cluster: str = "auto"
    num_cpus: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    memory_per_trial: float = 0.0  # GiB; 0: no reservation
    max_failures: int = 1
    storage: str = "ray_results"
    mlflow_uri: str = "sqlite:///mlruns.db"
    resume: bool = False
    pretrained_from: str | None = None

    def __post_init__(self) -> None:
        if self.pretrain_time_limit <= 0 or self.finetune_time_limit <= 0:
            raise RelcoreError("--pretrain-time-limit and --finetune-time-limit must be > 0 seconds")
        if self.max_failures < 0 or self.cpus_per_trial <= 0 or self.num_samples < 1:
            raise RelcoreError("--max-failures must be >= 0, --cpus-per-trial > 0, --num-samples >= 1")
        if self.gpus_per_trial < 0 or self.memory_per_trial < 0 or (self.num_cpus is not None and self.num_cpus < 1):
            raise RelcoreError("--gpus-per-trial and --memory-per-trial must be >= 0, --num-cpus >= 1")
        if self.pretrained_from and self.search != "grid":
            raise RelcoreError("--pretrained-from reuses another sweep's pretraining: --search does not apply")

    @classmethod
    def from_namespace(cls, args) -> "SweepOptions":
        values = {k: v for k, v in vars(args).items() if k in cls.__dataclass_fields__}
        return cls(**{**values, "time_col": tuple(values.get("time_col") or ())})


@dataclass
class StageOutcome:
    results: list  # ray.tune.Result
    wall_s: float
    busy_s: float
    setup_s: float
    reused_from: str | None = None  # another sweep's finished pretraining stage


@dataclass
class Sweep:
    args: SweepOptions
    preset: space.Preset
    spec: DatasetSpec
    dataset: DatasetSpec  # what every trial loads (raw_dir absolute, so workers anywhere find it)
    tasks: list[str]
    storage: str
    outcomes: dict[str, StageOutcome] = field(default_factory=dict)
    slots: float = 1.0  # trials at once (cluster CPUs / --cpus-per-trial), set on connect
    stop_signal: int | None = None  # SIGINT/SIGTERM received while a stage ran
    reused: list | None = None  # --pretrained-from: the other sweep's matching pretraining results

    # --- validation (nothing runs before all of it passed) ------------------------------
    @classmethod
    def from_args(cls, args: SweepOptions) -> "Sweep":
        preset = space.get_preset(args.preset)
        preset = space.with_overrides(
            preset, backbones=_split(args.backbones), layers=_split(args.layers, int),
            aggr=_split(args.aggr), corruption=_split(args.corruption, float),
            baseline_seeds=args.seeds, finetune_seeds=args.finetune_seeds)
        if args.pretrain_steps is not None:
            preset.pretrain = replace(preset.pretrain, max_steps=args.pretrain_steps)
        if args.finetune_steps is not None:
            preset.finetune = replace(preset.finetune, max_steps=args.finetune_steps)
        # The loops own stopping (patience, wall time, max steps): the limits travel in each trial's config.
        preset.pretrain = replace(preset.pretrain, time_limit_s=args.pretrain_time_limit)
        preset.finetune = replace(preset.finetune, precision=args.finetune_precision,
                                  time_limit_s=args.finetune_time_limit, batch_order=args.batch_order)
        spec = DatasetSpec(args.dataset, raw_dir=args.raw_dir, time_cols=args.time_col,
                           db_cut=args.db_cut or preset.db_cut)
        dataset = load_dataset(spec)  # unknown dataset / missing or corrupt data fail here
        tasks = cls._resolve_tasks(args.tasks, spec, preset)
        storage = check_storage(args.storage)
        store.check_store(args.mlflow_uri)
        sweep = cls(args, preset, spec, replace(spec, raw_dir=spec.raw_dir and str(Path(spec.raw_dir).resolve())),
                    tasks, storage)
        sweep._check_not_existing()
        if args.pretrained_from:
            sweep.reused = sweep._reusable_pretraining(args.pretrained_from)
        del dataset
        return sweep

    @staticmethod
    def _resolve_tasks(text: str | None, spec: DatasetSpec, preset: space.Preset) -> list[str]:
        known = entity_task_names(spec)
        if text:
            tasks = list(_split(text))
            for t in tasks:
                if t not in known:
                    raise RelcoreError(f"unknown task '{t}' for dataset '{spec.name}' "
                                       f"(known: {', '.join(known) or 'none'})")
            return tasks
        if spec.registry_name in preset.paper_tasks:
            return list(preset.paper_tasks[spec.registry_name])
        return known[: preset.tasks_per_dataset] if preset.tasks_per_dataset else known

    def _stage_path(self, stage: str) -> str:
        return f"{self.storage.rstrip('/')}/{self.args.name}-{stage}"

    def _check_not_existing(self) -> None:
        if self.args.resume:
            return
        for stage in ("pretrain", "finetune"):
            if tune.Tuner.can_restore(self._stage_path(stage)):
                raise RelcoreError(f"sweep '{self.args.name}' already exists in {self.storage}: "
                                   "continue it with --resume or choose another --name")

    def _reusable_pretraining(self, source: str) -> list:
        """The finished pretraining trials of sweep ``source`` that this sweep's grid asks for.

        A checkpoint stands in for one of ours only if it was pretrained on the same data
        with the same backbone and pretraining settings (trial limits aside); anything less
        is refused, naming the first trial that does not match.
        """
        if source == self.args.name:
            raise RelcoreError("--pretrained-from names this sweep itself: continue it with --resume")
        path = f"{self.storage.rstrip('/')}/{source}-pretrain"
        if not tune.Tuner.can_restore(path):
            raise RelcoreError(f"no pretraining stage of sweep '{source}' in {self.storage}")
        from ray.tune import ExperimentAnalysis, ResultGrid

        analysis = ExperimentAnalysis(path)
        # a trial still running (or cut by a stop) has a checkpoint too, but not its last one
        terminated = {t.path for t in analysis.trials if t.status == "TERMINATED"}
        theirs = {}
        for r in ResultGrid(analysis):
            trial = space.trial_config(r.config or {})
            if r.path in terminated and r.error is None and r.checkpoint is not None and trial is not None:
                theirs.setdefault(trial.key, []).append(r)
        matched = []
        for ours in space.pretrain_trials(self.dataset, self.preset):
            found = theirs.get(ours.key)
            if not found:
                raise RelcoreError(f"sweep '{source}' has no finished pretraining trial {ours.key}: "
                                   "finish it (--resume) or pretrain here")
            theirs_trial = space.trial_config(found[0].config)
            for part in ("dataset", "backbone", "pretrain"):
                if _without_limits(getattr(theirs_trial, part)) != _without_limits(getattr(ours, part)):
                    raise RelcoreError(f"sweep '{source}' pretrained {ours.key} with other {part} "
                                       "settings: its checkpoints cannot stand in for this sweep's")
            matched += found
        return matched

    # --- running --------------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        start = time.time()
        # On a multi-node cluster connect() also refuses a local MLflow store, checks that every
        # node reads --storage and moves the graph cache there -- all before anything runs.
        info = connect(self.args.cluster, num_cpus=self.args.num_cpus, storage=self.storage,
                       mlflow_uri=self.args.mlflow_uri)
        print(f"run_grid: {info.describe()}", flush=True)
        check_trial_fits(self.args.cpus_per_trial, self.args.gpus_per_trial, self.args.memory_per_trial * 2**30)
        # Build (or load) the graph once here, so every worker only reads the disk cache.
        dataset = load_dataset(self.spec)
        graph = build_graph(get_db(dataset, self.spec.db_cut))
        train_rows = self._train_rows(dataset)
        del dataset
        print(f"run_grid: dataset {self.spec.name} ({graph.key}), tasks {', '.join(self.tasks) or 'none'}",
              flush=True)
        self.client = MlflowClient(self.args.mlflow_uri)
        self.slots = max(info.cpus / max(self.args.cpus_per_trial, 1e-9), 1.0)  # trials at once
        self.experiment_id = tracking.get_experiment_id(self.client, self.args.name)

        if self.reused is not None:
            pre = self._reuse_stage(self.args.pretrained_from)
        else:
            pre = self._run_stage("pretrain", pretrain_trainable, self._pretrain_space(),
                                  len(space.pretrain_trials(self.dataset, self.preset)))
        checkpoints = self._checkpoints(pre.results)
        ft_trials = space.finetune_trials(self.dataset, self.tasks, self.preset, checkpoints, train_rows)
        ft = self._run_stage("finetune", finetune_trainable,
                             {"trial": tune.grid_search([t.to_dict() for t in ft_trials])}, len(ft_trials))
        table = self._trial_table(ft.results)
        # resumed: the stages' accumulated wall time, not only this run's
        self._summary(table, pre, ft, max(time.time() - start, pre.wall_s + ft.wall_s), info.cpus)
        return aggregate.top_k(table)

    def _train_rows(self, dataset) -> dict[str, int] | None:
        """Rows of each task's training table, for a preset whose fine-tuning settings
        depend on them (``--preset reference``: 20 epochs)."""
        if self.preset.finetune_protocol is None:
            return None
        return {t: train_rows(load_task(self.spec, dataset, t)) for t in self.tasks}

    def _pretrain_space(self) -> dict:
        trials = [t.to_dict() for t in space.pretrain_trials(self.dataset, self.preset)]
        if self.args.search == "grid":
            return {"trial": tune.grid_search(trials)}
        g = self.preset.grid
        return {"axes": {"table_model": tune.choice(list(g.backbones)), "layers": tune.choice(list(g.layers)),
                         "aggr": tune.choice(list(g.aggr)), "corruption": tune.choice(list(g.corruption))},
                "base": trials[0]}

    def _run_stage(self, stage: str, trainable, param_space: dict, total: int) -> StageOutcome:
        """One stage: its MLflow parent run, Tune's fit under the stage clock, its outcome."""
        start = time.time()
        parent = tracking.stage_run(self.client, self.experiment_id, stage, self._stage_params())
        # A resumed stage's wall time continues from its earlier runs (tracking.StageClock keeps
        # it logged), so that its busy time, which counts every trial, is not set against this run's alone.
        if not self.args.resume:
            self.client.log_metric(parent, "wall_s", 0.0)
        tuner = self._tuner(stage, trainable, param_space, total, parent)
        self._catch_stop_signals()
        with tracking.StageClock(self.args.mlflow_uri, parent, start=start) as clock:
            try:
                grid = tuner.fit()
            except Exception as exc:  # noqa: BLE001 - Tune's own failure, not a trial's
                # Tune raises out of fit() when Ray itself loses a worker it did not expect to
                # lose (e.g. the memory monitor killing an actor during setup). Its experiment
                # state is saved after every trial event, so the stage is resumable like a stop.
                self._stop_stage(parent, clock.wall())
                raise RelcoreError(f"{stage} stage interrupted ({_why_tune_failed(exc)}); its "
                                   "state is saved; continue with the same command plus --resume") from exc
        outcome = self._outcome(stage, grid, parent, clock.wall())
        self.outcomes[stage] = outcome
        return outcome

    def _tuner(self, stage: str, trainable, param_space: dict, total: int, parent: str) -> tune.Tuner:
        """The stage's Tuner: restored from its storage on ``--resume``, else new."""
        resources = {"cpu": self.args.cpus_per_trial, "gpu": self.args.gpus_per_trial}
        if self.args.memory_per_trial > 0:
            resources["memory"] = self.args.memory_per_trial * 2**30
        runnable = tune.with_resources(trainable, resources)
        path = self._stage_path(stage)
        if self.args.resume and tune.Tuner.can_restore(path):
            print(f"run_grid: resuming {stage} from {path}", flush=True)
            if stale := tracking.mark_interrupted(self.client, self.experiment_id, stage):
                print(f"run_grid: {stale} trial(s) interrupted by the stop continue from their last "
                      "evaluation", flush=True)
            return tune.Tuner.restore(path, trainable=runnable, resume_unfinished=True,
                                      resume_errored=False, param_space=param_space)
        tune_config = tune.TuneConfig(reuse_actors=True)
        if stage == "pretrain" and self.args.search == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            total = self.args.num_samples
            tune_config = tune.TuneConfig(search_alg=OptunaSearch(metric="monitor", mode="min", seed=0),
                                          num_samples=total, reuse_actors=True)
        return tune.Tuner(runnable, param_space=param_space, tune_config=tune_config,
                          run_config=tune.RunConfig(
                              name=f"{self.args.name}-{stage}", storage_path=self.storage, verbose=0,
                              failure_config=tune.FailureConfig(max_failures=self.args.max_failures),
                              checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                              callbacks=[tracking.TrialRunLogger(self.args.mlflow_uri, self.args.name, stage, parent),
                                         ProgressLine(stage, total), DropLoopState()]))

    def _outcome(self, stage: str, grid, parent: str, wall: float) -> StageOutcome:
        """A finished stage's results and times, logged to its parent run. A stage Tune
        returned from early (a stop signal, unfinished trials) is closed as stopped instead:
        the next stage must not start from a partial set of checkpoints, nor the summary
        aggregate a partial grid."""
        results = [grid[i] for i in range(len(grid))]
        unfinished = len(grid) - grid.num_terminated - grid.num_errors
        if self.stop_signal is not None or unfinished:
            self._stop_stage(parent, wall)
            why = signal.Signals(self.stop_signal).name if self.stop_signal else f"{unfinished} trial(s) unfinished"
            raise RelcoreError(f"{stage} stage interrupted ({why}): its state is saved; continue with "
                               "the same command plus --resume")
        busy = sum(float(r.metrics.get("busy_s", r.metrics.get("time_total_s", 0.0)) or 0.0)
                   for r in results if r.metrics)
        setup = sum(float(r.metrics.get("setup_s", 0.0) or 0.0) for r in results if r.metrics)
        failed = sum(r.error is not None for r in results)
        tracking.finish_stage(self.client, parent, {"trials": len(results), "failed": failed, "wall_s": wall,
                                                    "busy_s": busy, "setup_s": setup, "slots": self.slots,
                                                    "overhead_share": overhead_share(busy, wall, self.slots)})
        return StageOutcome(results, wall, busy, setup)

    def _stop_stage(self, parent: str, wall: float) -> None:
        """Close a stage's parent run as stopped, keeping the wall time it ran."""
        self.client.log_metric(parent, "wall_s", wall)
        self.client.set_terminated(parent, status="KILLED")

    def _stage_params(self) -> dict:
        """What a stage's parent run logs: enough for ``sweeps/status.py`` to plan the grid."""
        return {"dataset": self.spec.name, "preset": self.args.preset, "search": self.args.search,
                "grid": vars(self.preset.grid), "tasks": ",".join(self.tasks)}

    def _reuse_stage(self, source: str) -> StageOutcome:
        """Stand in for the pretraining stage with ``source``'s checkpoints. The stage's
        parent run records where they came from; it costs this sweep no trial time."""
        parent = tracking.stage_run(self.client, self.experiment_id, "pretrain",
                                    {**self._stage_params(), "pretrained_from": source})
        tracking.finish_stage(self.client, parent, {"trials": 0, "reused_checkpoints": len(self.reused),
                                                    "wall_s": 0.0, "busy_s": 0.0})
        print(f"run_grid: pretraining reused from sweep '{source}' ({len(self.reused)} checkpoints)", flush=True)
        outcome = StageOutcome(self.reused, 0.0, 0.0, 0.0, reused_from=source)
        self.outcomes["pretrain"] = outcome
        return outcome

    def _catch_stop_signals(self) -> None:
        """Ctrl-C (SIGINT) or SIGTERM (a batch scheduler's) ends the sweep cleanly.

        Tune's own SIGINT handler is disabled (it is installed per ``fit()`` and a second
        stage's is not reliably the one that fires); ours records the signal and raises
        SIGUSR1, on which the running ``fit()`` checkpoints its state and returns.
        """
        if threading.current_thread() is not threading.main_thread():
            return

        def stop(signum: int, frame) -> None:
            if self.stop_signal is None:
                print(f"run_grid: {signal.Signals(signum).name} received: saving the sweep's state "
                      "(resume with --resume)", flush=True)
            self.stop_signal = signum
            signal.raise_signal(signal.SIGUSR1)

        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)

    def _checkpoints(self, results: list) -> list[space.Checkpoint]:
        """Best checkpoint of every successful pretraining trial (best one per key)."""
        best: dict[str, tuple[float, space.Checkpoint]] = {}
        for r in results:
            if r.error is not None or r.checkpoint is None:
                continue
            trial = space.trial_config(r.config)
            loss = float(r.metrics.get("best/val/loss", r.metrics.get("monitor", float("inf"))))
            path = r.checkpoint.path
            if _is_uri(self.storage):
                path = f"{self.storage.split('://', 1)[0]}://{path}"
            if trial.key not in best or loss < best[trial.key][0]:
                best[trial.key] = (loss, space.Checkpoint(trial.key, path, trial.backbone, trial.pretrain.corruption))
        return [c for _, (_, c) in sorted(best.items())]

    @staticmethod
    def _trial_table(results: list) -> pd.DataFrame:
        """``trials.csv`` of the fine-tuning stage's finished trials."""
        return trials.frame([trials.TrialRow.from_result(space.trial_config(r.config), r.metrics)
                             for r in results if r.error is None and r.metrics])

    def _summary(self, table: pd.DataFrame, pre: StageOutcome, ft: StageOutcome, wall: float,
                 cpus: float) -> None:
        results = aggregate.top_k(table)
        busy = pre.busy_s + ft.busy_s
        overhead = overhead_share(busy, wall, max(cpus / max(self.args.cpus_per_trial, 1e-9), 1.0))
        metrics = aggregate.summary_metrics(results)
        metrics.update({"sweep.wall_s": wall, "sweep.busy_s": busy, "sweep.setup_s": pre.setup_s + ft.setup_s,
                        "sweep.overhead_share": overhead})
        out = Path(tempfile.mkdtemp(prefix="relcore-report-"))
        try:
            report.write_reports(table, self._curves(pre.results), self._times(pre, ft), out)
            run = tracking.find_run(self.client, self.experiment_id, kind="summary")
            run_id = run.info.run_id if run else self.client.create_run(
                self.experiment_id, run_name="summary", tags={"kind": "summary"}).info.run_id
            ts = int(time.time() * 1000)
            items = [Metric(k, float(v), ts, 0) for k, v in metrics.items()]
            for lo in range(0, len(items), 500):
                self.client.log_batch(run_id, metrics=items[lo: lo + 500])
            self.client.log_artifacts(run_id, str(out))
            self.client.set_terminated(run_id, status="FINISHED")
            local = Path("runs") / self.args.name
            local.mkdir(parents=True, exist_ok=True)
            for f in out.iterdir():
                shutil.copy(f, local / f.name)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        print(report.results_markdown(results, table))
        reused = f" (reused from sweep '{pre.reused_from}')" if pre.reused_from else ""
        print(f"run_grid: {len(pre.results)} pretraining{reused} + {len(ft.results)} fine-tuning trials in "
              f"{wall:.0f}s (trial busy {busy:.0f}s, overhead share "
              f"{'unknown: a stop without warning lost wall time' if math.isnan(overhead) else f'{overhead:.1%}'}); "
              f"reports in {local} "
              f"and MLflow experiment '{self.args.name}' ({self.args.mlflow_uri})", flush=True)

    @staticmethod
    def _curves(results: list) -> dict[str, pd.DataFrame]:
        curves = {}
        for r in results:
            df = r.metrics_dataframe
            if r.error is None and df is not None and "val/loss" in df:
                curves[space.trial_config(r.config).key] = df[["step", "val/loss"]]
        return curves

    @staticmethod
    def _times(pre: StageOutcome, ft: StageOutcome) -> pd.DataFrame:
        rows = []
        for stage, outcome in (("pretrain", pre), ("finetune", ft)):
            if outcome.reused_from:  # another sweep's time, not this one's
                continue
            for r in outcome.results:
                if r.metrics:
                    t = space.trial_config(r.config)
                    rows.append({"stage": stage, "task": getattr(t, "task", "-"),
                                 "busy_s": float(r.metrics.get("busy_s", r.metrics.get("time_total_s", 0.0))),
                                 "end_time": r.metrics.get("timestamp", 0)})
        return pd.DataFrame(rows, columns=["stage", "task", "busy_s", "end_time"])


