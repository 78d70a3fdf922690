"""Fine-tuning a backbone on a RelBench entity task in the paper's three regimes.

- **B**: a fresh backbone, everything trains;
- **P**: a pretrained backbone, frozen; only the head (and the temporal encoder, which
  pretraining never sees) trains;
- **PF**: a pretrained backbone, everything trains;
- **R**: a randomly initialised backbone, frozen, head trained exactly as in P: the
  control that says what P owes to pretraining rather than to random features.

Each step draws ``batch_size`` rows of the task's training table, samples their
temporal neighbourhoods (no row dated after its seed), and fits the head's output with
BCE (binary) or MSE (regression; L1 optional). The best validation state (relbench's
own ``task.evaluate``) is restored before the test evaluation.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import torch
import torch.nn.functional as F
from relbench.base import EntityTask, Table, TaskType
from relbench.modeling.utils import to_unix_time

from relcore.errors import RelcoreError
from relcore.graph import RelGraph
from relcore.loop import PRECISIONS, Callback, EarlyStopping, WallClock, autocast, resolve_device, seed_everything
from relcore.models import BackboneConfig, GraphMeta, MLPHead, RDLBackbone, load_backbone
from relcore.resume import ResumableLoop, run_identity
from relcore.sampling.temporal import TemporalNeighborSampler

MODES = ("B", "P", "PF", "R")
BATCH_ORDERS = ("random", "time")
FROZEN = ("P", "R")  # regimes whose backbone does not train
SUPPORTED = (TaskType.BINARY_CLASSIFICATION, TaskType.REGRESSION)


@dataclass
class FinetuneConfig:
    """Fine-tuning hyper-parameters (the paper's defaults)."""

    mode: str = "B"
    lr: float = 1e-4
    batch_size: int = 512
    max_steps: int = 2000
    eval_every: int = 100
    patience: int = 5
    time_limit_s: float = 2 * 3600.0
    fanouts: tuple[int, ...] | int = 128
    regression_loss: str = "mse"
    precision: str = "fp32"  # "bf16": mixed-precision forward passes (relcore.loop.autocast)
    batch_order: str = "random"  # which seeds share a batch: see epoch_order
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise RelcoreError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.regression_loss not in ("mse", "l1"):
            raise RelcoreError(f"regression_loss must be mse or l1, got {self.regression_loss!r}")
        if self.precision not in PRECISIONS:
            raise RelcoreError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.batch_order not in BATCH_ORDERS:
            raise RelcoreError(f"batch order must be one of {BATCH_ORDERS}, got {self.batch_order!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fanouts"] = list(self.fanouts) if isinstance(self.fanouts, tuple) else self.fanouts
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneConfig":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if isinstance(d.get("fanouts"), list):
            d["fanouts"] = tuple(d["fanouts"])
        return cls(**d)


def train_rows(task: EntityTask) -> int:
    """Rows of the task's training table: what an epoch is counted in."""
    return len(task.get_table("train").df)


def reference_code_protocol(config: FinetuneConfig, train_rows: int, layers: int,
                            epochs: int = 20) -> FinetuneConfig:
    """``config`` with the fine-tuning settings of the paper's reference code.

    The paper states lr 1e-4, 128 neighbours per hop and MSE (our defaults). Its code
    (ReDeLEx, ``experiments/pretraining/dbgnn_*pretrain.py``) fine-tunes with Adam lr
    5e-3, fan-outs halving per hop (``[128, 64, 32]`` for 3 layers), L1 for regression,
    Lightning's ``max_epochs=20`` and a validation every ``min(100, batches per epoch)``
    steps with patience 10. Epochs are counted in full batches, as this loop draws them:

    .. math::
        \text{steps} = \min(\text{max\_steps},\; 20 \lfloor n_{train} / B \rfloor)
    """
    per_epoch = max(train_rows // config.batch_size, 1)
    return replace(config, lr=5e-3, fanouts=tuple(128 // 2**hop for hop in range(layers)),
                   regression_loss="l1", max_steps=min(config.max_steps, epochs * per_epoch),
                   eval_every=min(100, per_epoch), patience=10)


@dataclass
class FinetuneResult:
    task: str
    mode: str
    metric: str
    val: dict[str, float]
    test: dict[str, float]
    best_step: int
    steps: int
    seconds: float
    stop_reason: str
    history: list[dict] = field(default_factory=list)
    model: torch.nn.Module | None = field(default=None, repr=False, compare=False)  # at its best state

    def summary(self) -> dict:
        """The JSON the CLI prints (no history, no model)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("history", "model")}


@dataclass
class SplitTable:
    """One split of a task table as tensors: entity ids, seed times, targets."""

    table: Table
    ids: torch.Tensor
    times: torch.Tensor
    y: torch.Tensor

    @classmethod
    def of(cls, task: EntityTask, split: str) -> "SplitTable":
        """The split in a fixed row order: (seed time, entity, target).

        relbench builds task tables with unordered DuckDB queries, so their row order
        changes from process to process; batches drawn by position would then differ
        between two runs with the same seed.
        """
        table = task.get_table(split, mask_input_cols=False)
        df = table.df.sort_values([task.time_col, task.entity_col, task.target_col],
                                  kind="mergesort").reset_index(drop=True)
        table = Table(df=df, fkey_col_to_pkey_table=table.fkey_col_to_pkey_table,
                      pkey_col=table.pkey_col, time_col=table.time_col)
        return cls(
            table=table,
            ids=torch.from_numpy(df[task.entity_col].astype(int).to_numpy()),
            times=torch.from_numpy(to_unix_time(df[task.time_col])),
            y=torch.from_numpy(df[task.target_col].to_numpy().astype(np.float32)),
        )


def epoch_order(times: torch.Tensor, batch_order: str, generator: torch.Generator) -> torch.Tensor:
    """The order an epoch visits the training rows in; consecutive slices are its batches.

    - ``random``: a uniform permutation, so a batch mixes seeds of many timestamps.
    - ``time``: whole timestamps in a shuffled order, rows shuffled within each, so a batch
      holds the seeds of a few timestamps. Seeds at one timestamp share most of their
      neighbourhoods, which a batch can then compute once; each seed keeps its
      own subgraph and is still visited once per epoch, only its batch-mates change.
    """
    perm = torch.randperm(len(times), generator=generator)
    if batch_order == "random":
        return perm
    _, group = torch.unique(times, return_inverse=True)
    rank = torch.randperm(int(group.max()) + 1 if len(times) else 0, generator=generator)[group]
    return perm[torch.sort(rank[perm], stable=True).indices]


def main_metric(task: EntityTask) -> tuple[str, bool]:
    """The validation metric that selects models: (name, higher_is_better)."""
    if task.task_type == TaskType.BINARY_CLASSIFICATION:
        return "roc_auc", True
    return "mae", False


class TaskModel(torch.nn.Module):
    """Backbone + MLP head on the seed rows of a temporal batch."""

    def __init__(self, backbone: RDLBackbone, entity_table: str):
        super().__init__()
        self.backbone = backbone
        self.head = MLPHead(backbone.channels)
        self.entity_table = entity_table

    def forward(self, batch, row_cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        h = self.backbone(batch, row_cache)[self.entity_table][: batch[self.entity_table].batch_size]
        return self.head(h).squeeze(-1)


def make_backbone(graph: RelGraph, mode: str, backbone_config: BackboneConfig | None,
                  checkpoint: str | None) -> RDLBackbone:
    """A fresh backbone for B and R; the checkpoint's for P and PF (schema checked)."""
    if mode in ("B", "R"):
        if checkpoint is not None:
            raise RelcoreError(f"mode {mode} starts from a random backbone: drop --checkpoint or use P/PF")
        return RDLBackbone(backbone_config or BackboneConfig(), GraphMeta.from_graph(graph))
    if checkpoint is None:
        raise RelcoreError(f"mode {mode} needs a pretrained --checkpoint")
    return load_backbone(checkpoint, graph)


def freeze_for_mode(model: TaskModel, mode: str) -> list[torch.nn.Parameter]:
    """Set requires_grad per regime; return the parameters the optimiser updates."""
    for p in model.parameters():
        p.requires_grad_(True)
    if mode in FROZEN:
        for name, p in model.backbone.named_parameters():
            p.requires_grad_(name.startswith("temporal."))
    return [p for p in model.parameters() if p.requires_grad]


def _train_mode(model: TaskModel, mode: str) -> None:
    model.train()
    if mode in FROZEN:  # frozen backbone: no dropout noise, no statistics updates
        model.backbone.eval()
        if model.backbone.temporal is not None:
            model.backbone.temporal.train()


def finetune(
    graph: RelGraph,
    task: EntityTask,
    task_name: str,
    config: FinetuneConfig,
    backbone_config: BackboneConfig | None = None,
    checkpoint: str | None = None,
    callback: Callback | None = None,
    state_path: str | os.PathLike | None = None,
) -> FinetuneResult:
    """Train a task model in ``config.mode``; return val/test metrics of the best state.

    With ``state_path`` the run is resumable (:mod:`relcore.resume`): every evaluation
    saves its state there and passes the path to ``callback`` as ``checkpoint``; if the
    file exists at the start, the run continues from it with the result an
    uninterrupted run would have had.
    """
    if task.task_type not in SUPPORTED:
        raise RelcoreError(f"task '{task_name}' is {task.task_type.value}: not supported yet")
    seed_everything(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    device = resolve_device(config.device)
    model = TaskModel(make_backbone(graph, config.mode, backbone_config, checkpoint), task.entity_table)
    model.to(device)
    params = freeze_for_mode(model, config.mode)
    optimizer = torch.optim.Adam(params, lr=config.lr, fused=True)  # one kernel for all tensors
    # A frozen backbone encodes every row identically in every batch: do it once.
    row_cache = None
    if config.mode in FROZEN:
        model.backbone.eval()
        row_cache = model.backbone.encode_tables(graph.data)
    num_layers = model.backbone.config.layers
    sampler = TemporalNeighborSampler(graph, config.fanouts, num_layers=num_layers)

    train, val, test = (SplitTable.of(task, s) for s in ("train", "val", "test"))
    binary = task.task_type == TaskType.BINARY_CLASSIFICATION
    # Regression targets are standardised with training statistics (predictions are
    # mapped back before relbench evaluates them): MSE on raw positions would make
    # lr 1e-4 crawl.
    y_mean, y_std = (0.0, 1.0) if binary else (float(train.y.mean()), float(train.y.std()) or 1.0)
    metric, higher = main_metric(task)

    def predict(split: SplitTable) -> np.ndarray:
        model.eval()
        out = []
        eval_gen = torch.Generator().manual_seed(config.seed + 1)  # same neighbourhoods every time
        with torch.no_grad():
            for lo in range(0, len(split.ids), config.batch_size):
                sl = slice(lo, lo + config.batch_size)
                batch = sampler.sample(task.entity_table, split.ids[sl], split.times[sl], generator=eval_gen)
                with autocast(device, config.precision):
                    out.append(model(batch.to(device), row_cache).float().cpu())
        z = torch.cat(out) if out else torch.zeros(0)
        return (torch.sigmoid(z) if binary else z * y_std + y_mean).numpy()

    def loss_fn(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if binary:
            return F.binary_cross_entropy_with_logits(z, y)
        y = (y - y_mean) / y_std
        return F.mse_loss(z, y) if config.regression_loss == "mse" else F.l1_loss(z, y)

    history: list[dict] = []
    best_state, best_val, best_test = copy.deepcopy(model.state_dict()), {}, {}
    order, cursor = epoch_order(train.times, config.batch_order, gen), 0
    run = run_identity("finetune", config.to_dict(), task=task_name, backbone=model.backbone.config.to_dict())
    loop = ResumableLoop(run, state_path, callback, model, optimizer, gen, device,
                         EarlyStopping(config.patience, higher), WallClock(config.time_limit_s), config.max_steps)
    if (state := loop.resume()) is not None:
        best_state, best_val, best_test = state["best_state"], state["best_val"], state["best_test"]
        history, order, cursor = state["history"], state["order"], state["cursor"]
    while loop.next_step():
        step = loop.step
        if cursor + config.batch_size > len(order):  # new epoch
            order, cursor = epoch_order(train.times, config.batch_order, gen), 0
        idx = order[cursor: cursor + config.batch_size]
        cursor += config.batch_size
        _train_mode(model, config.mode)
        batch = sampler.sample(task.entity_table, train.ids[idx], train.times[idx], generator=gen)
        with autocast(device, config.precision):
            z = model(batch.to(device), row_cache)
        loss = loss_fn(z.float(), train.y[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        metrics = {"step": step, "train/loss": float(loss.detach())}

        evaluated = step % config.eval_every == 0 or step == config.max_steps
        if evaluated:
            val_metrics = task.evaluate(predict(val), val.table)
            metrics.update({f"val/{k}": float(v) for k, v in val_metrics.items()})
            metrics["time/seconds"] = loop.clock.elapsed
            if loop.stopper.update(step, float(val_metrics[metric])):
                # Test is measured for every new best-by-validation state, so a run
                # stopped from outside (its callback) still has the selected state's
                # test metrics. Selection never looks at them.
                best_state, best_val = copy.deepcopy(model.state_dict()), val_metrics
                best_test = task.evaluate(predict(test), test.table)
            metrics.update({f"best/val/{k}": float(v) for k, v in best_val.items()})
            metrics.update({f"best/test/{k}": float(v) for k, v in best_test.items()})
            metrics["best/step"] = loop.stopper.best_step
        history.append(metrics)
        loop.end_step(metrics, evaluated, order=order, cursor=cursor, history=history, best_state=best_state,
                      best_val=best_val, best_test=best_test)
    stop_reason = loop.reason or "max_steps"
    step, stopper, clock = loop.step, loop.stopper, loop.clock

    if not best_val:  # stopped before the first evaluation
        best_val = task.evaluate(predict(val), val.table)
        best_test = task.evaluate(predict(test), test.table)
        stopper.best_step = step
    else:
        model.load_state_dict(best_state)
    test_metrics = best_test
    return FinetuneResult(
        task=task_name, mode=config.mode, metric=metric,
        val={k: float(v) for k, v in best_val.items()},
        test={k: float(v) for k, v in test_metrics.items()},
        best_step=stopper.best_step, steps=step, seconds=clock.elapsed,
        stop_reason=stop_reason, history=history, model=model,
    )
