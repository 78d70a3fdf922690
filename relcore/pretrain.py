"""Task-agnostic contrastive pretraining of an RDL backbone (the paper's Section 3).

One step: HGSample a subgraph of the database pruned to the validation timestamp,
corrupt its rows (SCARF), embed the clean and the corrupted view with the same
backbone, and minimise Eq. 6 (row + link + context losses, each normalised by
:math:`\\mu(N)`). Every ``eval_every`` steps the normalised losses on a fixed set of
validation subgraphs decide early stopping and which backbone is checkpointed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch_geometric.data import HeteroData

from relcore.corruption import MarginalPool, corrupt_batch
from relcore.errors import RelcoreError
from relcore.graph import RelGraph
from relcore.loop import Callback, EarlyStopping, WallClock, notify, resolve_device, seed_everything
from relcore.losses import ContrastiveObjective
from relcore.models import BackboneConfig, GraphMeta, RDLBackbone, save_backbone
from relcore.resume import ResumableLoop, run_identity
from relcore.sampling.batch import disjoint_union
from relcore.sampling.hgt import HGSampler

TERMS = ("row", "link", "context")


@dataclass
class PretrainConfig:
    """Pretraining hyper-parameters (paper defaults)."""

    corruption: float = 0.2
    corruption_mode: str = "marginal"
    batch_size: int = 64
    num_samples: int = 64
    iterations: int = 3
    n_max: int = 256
    lr: float = 1e-3
    max_steps: int = 2000
    eval_every: int = 50
    val_subgraphs: int = 50
    patience: int = 10
    time_limit_s: float = 4 * 3600.0
    seed: int = 0
    device: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class PretrainResult:
    steps: int
    initial: dict[str, float]
    final: dict[str, float]
    best: dict[str, float]
    best_step: int
    seconds: float
    steps_per_second: float
    stop_reason: str
    checkpoint: str | None
    history: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        """The JSON the CLI prints (no history)."""
        out = {k: v for k, v in asdict(self).items() if k != "history"}
        out["best_val_loss"] = self.best.get("loss")
        return out


class ContrastiveStep(torch.nn.Module):
    """Backbone + Eq. 6 on a clean view and its corrupted copy."""

    def __init__(self, backbone: RDLBackbone, objective: ContrastiveObjective):
        super().__init__()
        self.backbone = backbone
        self.objective = objective

    def forward(self, clean: HeteroData, corrupted: HeteroData):
        # Both views in one pass over their disjoint union (same outputs, half the ops).
        out = self.backbone(disjoint_union(clean, corrupted))
        n = {t: clean[t].num_nodes for t in clean.node_types}
        h = {t: x[: n[t]] for t, x in out.items()}
        h_hat = {t: x[n[t]:] for t, x in out.items()}
        return self.objective(h, h_hat, clean)


def pretrain(
    graph: RelGraph,
    backbone_config: BackboneConfig,
    config: PretrainConfig,
    max_time: int | None,
    out_dir: str | os.PathLike | None = None,
    callback: Callback | None = None,
    state_path: str | os.PathLike | None = None,
) -> PretrainResult:
    """Pretrain a fresh backbone on ``graph`` rows dated ``<= max_time`` (unix seconds).

    Saves the best backbone (by validation loss) to ``out_dir/backbone.pt`` and the
    loss history to ``out_dir/history.json``; ``callback`` gets that path as its
    ``checkpoint`` when it improved. With ``state_path`` the run is resumable
    (:mod:`relcore.resume`): every evaluation saves its state there and passes that
    path instead; a run finding the file (and its ``out_dir/backbone.pt``) continues from
    it with the result an uninterrupted run would have had.
    """
    seed_everything(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    sampler, pool = pretext_sources(graph, config, max_time)

    backbone = RDLBackbone(backbone_config, GraphMeta.from_graph(graph))
    objective = ContrastiveObjective(backbone.node_types, backbone.edge_types,
                                     backbone_config.channels, n_max=config.n_max)
    device = resolve_device(config.device)
    model = ContrastiveStep(backbone, objective).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)  # one kernel for ~300 tensors
    val_set = validation_pairs(sampler, pool, config, device)

    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    checkpoint = str(out / "backbone.pt") if out is not None else None
    run = run_identity("pretrain", config.to_dict(), backbone=backbone_config.to_dict(), max_time=max_time,
                       graph=graph.key)
    loop = ResumableLoop(run, state_path, callback, model, optimizer, gen, device, EarlyStopping(config.patience),
                         WallClock(config.time_limit_s), config.max_steps)
    if loop.can_resume and (checkpoint is None or not os.path.exists(checkpoint)):
        raise RelcoreError(f"resuming from {state_path} needs the run's best backbone in out_dir")
    if (state := loop.resume()) is not None:
        initial, best, final, history = state["initial"], state["best"], state["final"], state["history"]
    else:
        initial = final = evaluate(model, val_set)
        loop.stopper.update(0, initial["loss"])
        best = dict(initial)
        _save(backbone, checkpoint, graph, config, 0, initial)
        history = [{"step": 0, **{f"val/{k}": v for k, v in initial.items()}, "best/val/loss": initial["loss"]}]
        notify(callback, 0, history[-1], checkpoint)

    while loop.next_step():
        step = loop.step
        model.train()
        clean, corrupted = _pair(sampler, config, pool, gen, device)
        losses = model(clean, corrupted)
        optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        optimizer.step()
        metrics = {"step": step, **{f"train/{k}": v for k, v in losses.as_dict().items()
                                    if k in ("loss", *TERMS)}}

        saved = None
        evaluated = step % config.eval_every == 0 or step == config.max_steps
        if evaluated:
            final = evaluate(model, val_set)
            metrics.update({f"val/{k}": v for k, v in final.items()})
            metrics["time/seconds"] = loop.clock.elapsed
            if loop.stopper.update(step, final["loss"]):
                best = dict(final)
                _save(backbone, checkpoint, graph, config, step, final)
                saved = checkpoint
            metrics["best/val/loss"] = best["loss"]
        history.append(metrics)
        loop.end_step(metrics, evaluated, saved, history=history, initial=initial, best=best, final=final)
    stop_reason = loop.reason or "max_steps"
    step, stopper, clock = loop.step, loop.stopper, loop.clock

    seconds = clock.elapsed
    if out is not None:
        (out / "history.json").write_text(json.dumps(history))
    return PretrainResult(
        steps=step, initial=initial, final=final, best=best, best_step=stopper.best_step,
        seconds=seconds, steps_per_second=step / seconds if seconds > 0 else 0.0,
        stop_reason=stop_reason, checkpoint=checkpoint, history=history,
    )


def pretext_sources(graph: RelGraph, config: PretrainConfig, max_time: int | None) -> tuple[HGSampler, MarginalPool]:
    """The subgraph sampler and the corruption's value pool, both blind to rows after ``max_time``."""
    return (HGSampler(graph, num_samples=config.num_samples, iterations=config.iterations, max_time=max_time),
            MarginalPool(graph, max_time=max_time))


def validation_pairs(sampler: HGSampler, pool: MarginalPool, config: PretrainConfig,
                     device: torch.device) -> list[tuple[HeteroData, HeteroData]]:
    """The fixed (clean, corrupted) validation subgraphs of a run with ``config``'s seed."""
    gen = torch.Generator().manual_seed(config.seed + 10_007)
    return [_pair(sampler, config, pool, gen, device) for _ in range(config.val_subgraphs)]


def _pair(sampler: HGSampler, config: PretrainConfig, pool: MarginalPool, gen: torch.Generator,
          device: torch.device) -> tuple[HeteroData, HeteroData]:
    clean = sampler.sample(config.batch_size, generator=gen)
    corrupted = corrupt_batch(clean, config.corruption, pool, config.corruption_mode, gen)  # on CPU
    return clean.to(device), corrupted.to(device)


@torch.no_grad()
def evaluate(model: ContrastiveStep, val_set: list[tuple[HeteroData, HeteroData]]) -> dict[str, float]:
    """Mean normalised losses (total and per term) over the validation subgraphs.

    The objective's negative subsampling is random: fix its seed so that every
    evaluation of the same model gives the same number.
    """
    model.eval()
    rows = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for clean, corrupted in val_set:
            d = model(clean, corrupted).as_dict()
            rows.append([d[k] for k in ("loss", *TERMS)])
    # A term can be absent from a subgraph (NaN): average over those that have it.
    means = torch.tensor(rows, dtype=torch.float64).nanmean(dim=0)
    return {k: float(v) for k, v in zip(("loss", *TERMS), means)}


def _save(backbone: RDLBackbone, path: str | None, graph: RelGraph, config: PretrainConfig,
          step: int, val: dict) -> None:
    if path is not None:
        save_backbone(path, backbone, extra={"pretrain": config.to_dict(), "step": step,
                                             "val": val, "graph_key": graph.key})
