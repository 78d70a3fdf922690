"""Pieces both training loops share: callbacks, early stopping, wall-time limit, seeding,
numeric precision."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import torch


class Callback(Protocol):
    """Receives every step's metrics. ``checkpoint`` is set when the loop has just saved
    a file: pretraining's new best backbone, fine-tuning's resumable state.

    The loops never know who listens: Ray Tune, MLflow, a progress bar or a test.
    Returning ``True`` asks the loop to stop (e.g. a Tune stopper decided so).
    """

    def __call__(self, step: int, metrics: dict[str, float], checkpoint: str | None) -> bool | None: ...


def resolve_device(name: str) -> torch.device:
    """``"auto"`` = CUDA when available (a GPU trial), else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device, precision: str):
    """The forward passes' precision: ``fp32`` (the default, exact) or ``bf16``.

    ``bf16`` is PyTorch's automatic mixed precision: parameters, gradients, Adam's
    state and the losses stay fp32; matrix products run in bfloat16. On a CPU with
    AVX512-BF16 or AMX (and on GPUs) those products are faster, and they are most of a
    step's time (fine-tuning's ResNet table models over every row of a batch); the price
    is bfloat16's 8-bit mantissa inside the products (measured: ``sweeps/bench/results/speed.md``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class EarlyStopping:
    """Stop after ``patience`` evaluations without improvement of the monitored value."""

    patience: int
    higher_is_better: bool = False
    best: float = math.nan
    best_step: int = -1
    bad_evals: int = 0

    def update(self, step: int, value: float) -> bool:
        """Record an evaluation; return True when it is a new best."""
        better = math.isnan(self.best) or (
            value > self.best if self.higher_is_better else value < self.best
        )
        if better:
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.bad_evals >= self.patience


@dataclass
class WallClock:
    """A per-run wall-time limit in seconds (``inf`` = none)."""

    limit_s: float
    start: float = field(default_factory=time.perf_counter)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def expired(self) -> bool:
        return self.elapsed >= self.limit_s


def notify(callback: Callable | None, step: int, metrics: dict[str, Any], checkpoint: str | None = None) -> bool:
    """Call the callback if any; True if it asked to stop."""
    return bool(callback(step, metrics, checkpoint)) if callback is not None else False


def why_stop(callback_asked: bool, stopper: EarlyStopping, clock: WallClock) -> str | None:
    """Why a loop must end after this step, if it must: callback, patience, wall time."""
    if callback_asked:
        return "callback"
    if stopper.should_stop:
        return "early_stopping"
    if clock.expired:
        return "time_limit"
    return None
