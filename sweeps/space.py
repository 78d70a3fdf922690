"""The sweep's search space: presets, grid axes and the trial configs built from them.

A trial config is a plain dict (Ray's param space, MLflow's params) holding the
dataset spec, the backbone config and the loop config, so a trial can be re-run from
its MLflow params alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from relcore.errors import RelcoreError
from relcore.finetune import FinetuneConfig, reference_code_protocol
from relcore.models.config import AGGRS, LAYERS, TABLE_MODELS, BackboneConfig
from relcore.pretrain import PretrainConfig

REGIMES = ("B", "P", "PF", "R")


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


def pretrain_trials(dataset: dict, preset: Preset, limits: dict) -> list[dict]:
    """One config per (backbone, layers, aggr, corruption, seed)."""
    g = preset.grid
    trials = []
    for bb in g.backbones:
        for layers in g.layers:
            for aggr in g.aggr:
                for p in g.corruption:
                    for seed in range(g.pretrain_seeds):
                        cfg = replace(preset.pretrain, corruption=float(p), seed=seed)
                        trials.append({
                            "stage": "pretrain",
                            "key": f"{bb}-L{layers}-{aggr}-c{p}-s{seed}",
                            "dataset": dataset,
                            "backbone": backbone_config(bb, layers, aggr).to_dict(),
                            "pretrain": cfg.to_dict(),
                            "limits": limits,
                        })
    return trials


def finetune_trials(dataset: dict, tasks: list[str], preset: Preset, limits: dict,
                    checkpoints: dict[str, dict], train_rows: dict[str, int] | None = None) -> list[dict]:
    """B and R for every (layers, aggr, seed); P and PF for every pretraining checkpoint
    and fine-tuning seed.

    R (a random backbone, frozen) mirrors B's configurations, as the paper's code grids
    its no-pretraining runs over a trained and a frozen backbone.
    ``checkpoints`` maps a pretraining trial key to ``{"path": ..., "backbone": {...},
    "corruption": p}``. Each checkpoint is pretrained once and reused by every task and
    both regimes.
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
                            trials.append(_ft_trial(
                                dataset, task, regime, backbone_config(bb, layers, aggr).to_dict(), None,
                                f"{bb}-L{layers}-{aggr}-s{seed}", None, preset.name,
                                cfg(task, layers, mode=regime, seed=seed), limits))
        for key, ckpt in checkpoints.items():
            for seed in range(g.finetune_seeds):
                # seed 0 keeps the key a single-seed sweep has always had
                suffix = f"-f{seed}" if seed else ""
                for regime in ("P", "PF"):
                    trials.append(_ft_trial(dataset, task, regime, ckpt["backbone"], ckpt["path"],
                                            key + suffix, ckpt.get("corruption"), preset.name,
                                            cfg(task, ckpt["backbone"]["layers"], mode=regime, seed=seed),
                                            limits, pretrain_key=key))
    return round_robin(trials)


def round_robin(trials: list[dict]) -> list[dict]:
    """Interleave trials over the (task, backbone, regime) cells of the results table.

    Tune starts trials in list order, so a sweep stopped part-way (hours into the paper
    grid) has a few trials in every cell instead of every trial of the first cells:
    ``sweeps/status.py``'s partial table is then an early estimate of the whole one.
    Within a cell the order is kept.
    """
    cells: dict[tuple, list[dict]] = {}
    for t in trials:
        cells.setdefault((t["task"], t["table_model"], t["regime"]), []).append(t)
    queues = list(cells.values())
    out = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def _ft_trial(dataset, task, regime, backbone, checkpoint, key, corruption, protocol, cfg, limits,
              pretrain_key=None) -> dict:
    return {
        "stage": "finetune",
        "key": f"{task}-{regime}-{key}",
        "dataset": dataset,
        "task": task,
        "regime": regime,
        "table_model": backbone["table_model"],
        "backbone": backbone,
        "checkpoint": checkpoint,
        "pretrain_key": pretrain_key,
        "corruption": corruption,
        "protocol": protocol,
        "finetune": cfg.to_dict(),
        "limits": limits,
    }


def trial_from_axes(base: dict, axes: dict) -> dict:
    """A pretraining trial config from Optuna-sampled axes on top of a base trial."""
    cfg = dict(base["pretrain"], corruption=float(axes["corruption"]))
    bb = backbone_config(axes["table_model"], int(axes["layers"]), axes["aggr"])
    return {**base, "key": f"{bb.table_model}-L{bb.layers}-{bb.aggr}-c{axes['corruption']}-s{cfg['seed']}",
            "backbone": bb.to_dict(), "pretrain": cfg}


def trial_config(config: dict) -> dict:
    """The trial dict behind a Tune config: a grid trial's, or the one Optuna's axes describe."""
    if "trial" in config:
        return config["trial"]
    if "axes" in config:
        return trial_from_axes(config["base"], config["axes"])
    return {}
