"""The sweep's search space: presets, grid axes and the trials built from them.

A trial is a typed spec (:class:`PretrainTrial`, :class:`FinetuneTrial`) holding the
dataset spec, the backbone config and the loop config. It round-trips through plain data
(``to_dict`` / ``from_dict``): Ray's param space, MLflow's params (flattened), and so a
trial can be re-run from its MLflow params alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from relcore.data import DatasetSpec
from relcore.errors import RelcoreError
from relcore.finetune import FinetuneConfig, reference_code_protocol
from relcore.models.config import AGGRS, LAYERS, TABLE_MODELS, BackboneConfig
from relcore.pretrain import PretrainConfig



@dataclass
class Grid:
    """The pretraining grid (the paper: layers x aggregation x corruption per backbone)."""

    backbones: tuple[str, ...] = TABLE_MODELS
    layers: tuple[int, ...] = (2, 3)
    aggr: tuple[str, ...] = ("sum", "mean")
    corruption: tuple[float, ...] = (0.2, 0.4, 0.6)
    pretrain_seeds: int = 1
    baseline_seeds: int = 3  # B and R trials per (layers, aggr): top-5 needs >= 5 members
    finetune_seeds: int = 1  # P and PF trials per checkpoint (the paper: 1)

    def validate(self) -> "Grid":
        axes = {"backbones": self.backbones, "layers": self.layers, "aggr": self.aggr,
                "corruption": self.corruption}
        for name, values in axes.items():
            if not values:
                raise RelcoreError(f"grid axis '{name}' is empty")
        _check_subset("backbones", self.backbones, TABLE_MODELS)
        _check_subset("layers", self.layers, LAYERS)
        _check_subset("aggr", self.aggr, AGGRS)
        for p in self.corruption:
            if not 0.0 < float(p) < 1.0:
                raise RelcoreError(f"corruption must lie in (0, 1), got {p}")
        if self.pretrain_seeds < 1 or self.baseline_seeds < 1 or self.finetune_seeds < 1:
            raise RelcoreError("--seeds and --finetune-seeds must be >= 1")
        return self

    def pretrain_trials(self) -> int:
        return len(self.backbones) * len(self.layers) * len(self.aggr) * len(self.corruption) * self.pretrain_seeds

    def finetune_trials_per_task(self) -> int:
        """B and R per (backbone, layers, aggr, seed); P and PF per checkpoint and fine-tuning seed."""
        configs = len(self.backbones) * len(self.layers) * len(self.aggr)
        return 2 * configs * self.baseline_seeds + 2 * self.pretrain_trials() * self.finetune_seeds


def _check_subset(name: str, values, allowed) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise RelcoreError(f"bad {name} value(s) {bad}: allowed {list(allowed)}")


@dataclass
class Preset:
    """A named protocol: the grid plus the loops' settings."""

    name: str
    grid: Grid
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    tasks_per_dataset: int | None = None  # None = every entity task
    paper_tasks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # per-trial fine-tuning settings that depend on the task's training rows and the depth:
    # (config, train_rows, layers) -> config; None = ``finetune`` as it is
    finetune_protocol: Callable[[FinetuneConfig, int, int], FinetuneConfig] | None = None
    db_cut: str = "test"  # relcore.data.get_db: the database both stages' graph is built from


def paper_preset() -> Preset:
    """The paper's full protocol (Section 4): every default as published."""
    return Preset(
        name="paper",
        grid=Grid(),
        pretrain=PretrainConfig(),
        finetune=FinetuneConfig(),
        paper_tasks={"rel-f1": ("driver-dnf", "driver-top3", "driver-position")},
    )


def quick_preset() -> Preset:
    """A tiny grid with few steps: the whole pipeline in minutes on 2 cores."""
    return Preset(
        name="quick",
        grid=Grid(backbones=("linear",), layers=(2,), aggr=("sum", "mean"), corruption=(0.2,),
                  baseline_seeds=1),
        pretrain=PretrainConfig(batch_size=32, num_samples=32, iterations=2, max_steps=20,
                                eval_every=10, val_subgraphs=4, patience=3),
        finetune=FinetuneConfig(batch_size=128, max_steps=20, eval_every=10, patience=3,
                                fanouts=(16, 8), lr=1e-3),
        tasks_per_dataset=2,
        paper_tasks={"rel-f1": ("driver-dnf", "driver-position")},
    )


def reference_preset() -> Preset:
    """The paper's grid, fine-tuned as the paper's reference code does (lr 5e-3, fan-outs
    halving per hop, L1 for regression, 20 epochs, patience 10; see
    :func:`relcore.finetune.reference_code_protocol`) on the full database, as that code
    builds its graph: the protocol behind its numbers."""
    preset = paper_preset()
    preset.name = "reference"
    preset.finetune = FinetuneConfig(patience=10)
    preset.finetune_protocol = reference_code_protocol
    preset.db_cut = "full"
    return preset


PRESETS = {"paper": paper_preset, "reference": reference_preset, "quick": quick_preset}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise RelcoreError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
    return PRESETS[name]()


def with_overrides(preset: Preset, **axes) -> Preset:
    """Replace grid axes given on the command line (None = keep the preset's)."""
    changes = {k: v for k, v in axes.items() if v is not None}
    preset.grid = replace(preset.grid, **changes).validate()
    return preset


def backbone_config(table_model: str, layers: int, aggr: str) -> BackboneConfig:
    return BackboneConfig(table_model=table_model, layers=layers, aggr=aggr)


def _dataset_from_dict(d: dict) -> DatasetSpec:
    return DatasetSpec(**{**d, "time_cols": tuple(d.get("time_cols", ()))})


def _dataset_to_dict(spec: DatasetSpec) -> dict:
    return {**asdict(spec), "time_cols": list(spec.time_cols)}


@dataclass(frozen=True)
class PretrainTrial:
    """One pretraining trial: everything it runs from, so its MLflow params re-run it."""

    key: str
    dataset: DatasetSpec
    backbone: BackboneConfig
    pretrain: PretrainConfig
    stage = "pretrain"

    def to_dict(self) -> dict:
        """Plain data: a Ray param space entry, flattened into MLflow params."""
        return {"stage": self.stage, "key": self.key, "dataset": _dataset_to_dict(self.dataset),
                "backbone": self.backbone.to_dict(), "pretrain": self.pretrain.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainTrial":
        return cls(key=d["key"], dataset=_dataset_from_dict(d["dataset"]),
                   backbone=BackboneConfig.from_dict(d["backbone"]), pretrain=PretrainConfig.from_dict(d["pretrain"]))


@dataclass(frozen=True)
class Checkpoint:
    """A finished pretraining trial's best backbone, as fine-tuning trials point to it."""

    key: str  # the pretraining trial's
    path: str
    backbone: BackboneConfig
    corruption: float


@dataclass(frozen=True)
class FinetuneTrial:
    """One fine-tuning trial in a regime (``relcore.finetune.MODES``) on one task."""

    key: str
    dataset: DatasetSpec
    task: str
    regime: str
    backbone: BackboneConfig
    finetune: FinetuneConfig
    protocol: str  # the preset that made it
    checkpoint: str | None = None  # P and PF
    pretrain_key: str | None = None
    corruption: float | None = None  # of the checkpoint; None for B and R
    stage = "finetune"

    @property
    def table_model(self) -> str:
        return self.backbone.table_model

    @property
    def cell(self) -> tuple[str, str, str]:
        """The results-table cell it belongs to."""
        return self.task, self.table_model, self.regime

    def to_dict(self) -> dict:
        return {"stage": self.stage, "key": self.key, "dataset": _dataset_to_dict(self.dataset), "task": self.task,
                "regime": self.regime, "table_model": self.table_model, "backbone": self.backbone.to_dict(),
                "checkpoint": self.checkpoint, "pretrain_key": self.pretrain_key, "corruption": self.corruption,
                "protocol": self.protocol, "finetune": self.finetune.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneTrial":
        corruption = d.get("corruption")
        return cls(key=d["key"], dataset=_dataset_from_dict(d["dataset"]), task=d["task"], regime=d["regime"],
                   backbone=BackboneConfig.from_dict(d["backbone"]), finetune=FinetuneConfig.from_dict(d["finetune"]),
                   protocol=d.get("protocol") or "", checkpoint=d.get("checkpoint"),
                   pretrain_key=d.get("pretrain_key"), corruption=None if corruption is None else float(corruption))


def pretrain_trials(dataset: DatasetSpec, preset: Preset) -> list[PretrainTrial]:
    """One trial per (backbone, layers, aggr, corruption, seed)."""
    g = preset.grid
    return [PretrainTrial(f"{bb}-L{layers}-{aggr}-c{p}-s{seed}", dataset, backbone_config(bb, layers, aggr),
                          replace(preset.pretrain, corruption=float(p), seed=seed))
            for bb in g.backbones for layers in g.layers for aggr in g.aggr for p in g.corruption
            for seed in range(g.pretrain_seeds)]


def finetune_trials(dataset: DatasetSpec, tasks: list[str], preset: Preset, checkpoints: list[Checkpoint],
                    train_rows: dict[str, int] | None = None) -> list[FinetuneTrial]:
    """B and R for every (layers, aggr, seed); P and PF for every pretraining checkpoint
    and fine-tuning seed.

    R (a random backbone, frozen) mirrors B's configurations, as the paper's code grids
    its no-pretraining runs over a trained and a frozen backbone. Each checkpoint is
    pretrained once and reused by every task and both regimes.
    ``train_rows`` (rows of each task's training table) is needed by a preset with a
    ``finetune_protocol``. Trials come in :func:`round_robin` order over the result cells.
    """
    g = preset.grid
    if preset.finetune_protocol is not None and not set(tasks) <= set(train_rows or {}):
        raise RelcoreError("this preset's fine-tuning protocol needs each task's training rows")

    def cfg(task: str, layers: int, **changes) -> FinetuneConfig:
        out = replace(preset.finetune, **changes)
        return out if preset.finetune_protocol is None else preset.finetune_protocol(out, train_rows[task], layers)

    trials = []
    for task in tasks:
        for bb in g.backbones:
            for layers in g.layers:
                for aggr in g.aggr:
                    for seed in range(g.baseline_seeds):
                        for regime in ("B", "R"):
                            trials.append(FinetuneTrial(
                                f"{task}-{regime}-{bb}-L{layers}-{aggr}-s{seed}", dataset, task, regime,
                                backbone_config(bb, layers, aggr), cfg(task, layers, mode=regime, seed=seed),
                                preset.name))
        for ckpt in checkpoints:
            for seed in range(g.finetune_seeds):
                suffix = f"-f{seed}" if seed else ""  # seed 0 keeps the key a single-seed sweep has always had
                for regime in ("P", "PF"):
                    trials.append(FinetuneTrial(
                        f"{task}-{regime}-{ckpt.key}{suffix}", dataset, task, regime, ckpt.backbone,
                        cfg(task, ckpt.backbone.layers, mode=regime, seed=seed), preset.name,
                        checkpoint=ckpt.path, pretrain_key=ckpt.key, corruption=ckpt.corruption))
    return round_robin(trials)


def round_robin(trials: list[FinetuneTrial]) -> list[FinetuneTrial]:
    """Interleave trials over the (task, backbone, regime) cells of the results table.

    Tune starts trials in list order, so a sweep stopped part-way (hours into the paper
    grid) has a few trials in every cell instead of every trial of the first cells:
    ``sweeps/status.py``'s partial table is then an early estimate of the whole one.
    Within a cell the order is kept.
    """
    cells: dict[tuple, list[FinetuneTrial]] = {}
    for t in trials:
        cells.setdefault(t.cell, []).append(t)
    queues = list(cells.values())
    out = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def trial_from_axes(base: dict, axes: dict) -> PretrainTrial:
    """A pretraining trial from Optuna-sampled axes on top of a base trial (its dict)."""
    trial = PretrainTrial.from_dict(base)
    cfg = replace(trial.pretrain, corruption=float(axes["corruption"]))
    bb = backbone_config(axes["table_model"], int(axes["layers"]), axes["aggr"])
    return replace(trial, key=f"{bb.table_model}-L{bb.layers}-{bb.aggr}-c{axes['corruption']}-s{cfg.seed}",
                   backbone=bb, pretrain=cfg)


def trial_config(config: dict) -> PretrainTrial | FinetuneTrial | None:
    """The trial behind a Tune config: a grid trial's, or the one Optuna's axes describe."""
    if "trial" in config:
        d = config["trial"]
        return (FinetuneTrial if d.get("stage") == "finetune" else PretrainTrial).from_dict(d)
    if "axes" in config:
        return trial_from_axes(config["base"], config["axes"])
    return None
