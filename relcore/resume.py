"""Resumable loop state: a run interrupted after an evaluation continues bit for bit.

A batch scheduler's time limit, a preempted node or a stopped sweep ends a trial
mid-run. A loop given a ``state_path`` writes there, at every evaluation, everything
the rest of the run depends on: parameters, optimiser moments, the best state so far,
early-stopping counters, the data order and the state of every random generator it
draws from (batches, neighbour samples, dropout masks). When the file exists at the
start, the loop continues from it and draws exactly what the uninterrupted run would
have drawn, so both end with the same result (``tests/test_finetune.py`` compares
them). Only the steps since the last evaluation are lost.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from relcore.errors import RelcoreError
from relcore.loop import EarlyStopping, WallClock, notify, why_stop

# Where a run executes and how long it may take: free to change when it is continued.
NOT_DECIDING = ("device", "time_limit_s")


def run_identity(loop: str, config: dict[str, Any], **decides: Any) -> dict[str, Any]:
    """What decides a run's computation: its loop, its settings (``config``, a config's
    ``to_dict()``) but those in :data:`NOT_DECIDING`, and ``decides``. A saved state is
    continued only by a run with the same identity."""
    return {"loop": loop, **decides, **{k: v for k, v in config.items() if k not in NOT_DECIDING}}


def loop_state(run: dict[str, Any], step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               stopper: EarlyStopping, clock: WallClock, generator: torch.Generator, device: torch.device,
               **rest: Any) -> dict[str, Any]:
    """What every loop saves after evaluation ``step`` (weights, optimiser, early-stopping
    counters, elapsed time, RNG states), plus the loop's own ``rest``."""
    return {"run": run, "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "stopper": asdict(stopper), "elapsed": clock.elapsed, "rng": _capture_rng(generator, device), **rest}


def resume_loop(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                generator: torch.Generator, device: torch.device,
                time_limit_s: float) -> tuple[int, EarlyStopping, WallClock]:
    """Put back what :func:`loop_state` saved: weights, optimiser and RNG states in place;
    returns the step to continue after, the early stopper and a clock that goes on from
    the saved elapsed time."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    _restore_rng(state["rng"], generator, device)
    clock = WallClock(time_limit_s, start=time.perf_counter() - state["elapsed"])
    return state["step"], EarlyStopping(**state["stopper"]), clock


def _capture_rng(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The state of the loop's own generator and of every global one it may draw from."""
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state(),
             "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a reader (or a kill mid-write) sees the
    previous complete file or the new one, never a torn one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_state(path: str | os.PathLike, run: dict[str, Any]) -> dict[str, Any]:
    """The state saved at ``path``, checked to belong to the run described by ``run``
    (the settings that decide what the run computes)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise RelcoreError(f"cannot read the resumable state {path}: {e}") from e
    if not isinstance(state, dict) or "run" not in state:
        raise RelcoreError(f"{path} is not a resumable loop state")
    saved = state["run"]
    differs = sorted(k for k in set(saved) | set(run) if saved.get(k) != run.get(k))
    if differs:
        raise RelcoreError(f"the resumable state {path} belongs to another run "
                           f"(it differs in: {', '.join(differs)})")
    return state


@dataclass
class ResumableLoop:
    """A training loop's bookkeeping around its step body: where it starts, and after each
    step (at an evaluation) saving the state, telling the callback, deciding to stop.

    The loop keeps its step body explicit::

        loop = ResumableLoop(run, state_path, callback, model, optimizer, gen, device, stopper, clock, max_steps)
        if (state := loop.resume()) is not None:
            ...  # the loop's own extras from ``state``
        while loop.next_step():
            ...  # one step on loop.step; evaluate and loop.stopper.update(...) when it is time
            loop.end_step(metrics, evaluated, saved, **extras_to_save)
        reason = loop.reason or "max_steps"
    """

    run: dict[str, Any]
    state_path: str | os.PathLike | None
    callback: Callable | None
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    device: torch.device
    stopper: EarlyStopping
    clock: WallClock
    max_steps: int
    step: int = 0
    reason: str | None = None  # why it stopped (callback, early_stopping, time_limit), once it has

    @property
    def can_resume(self) -> bool:
        return self.state_path is not None and os.path.exists(self.state_path)

    def resume(self) -> dict[str, Any] | None:
        """Continue from the saved state, if there is one, and return it; else None."""
        if not self.can_resume:
            return None
        state = load_state(self.state_path, self.run)
        self.step, self.stopper, self.clock = resume_loop(state, self.model, self.optimizer, self.generator,
                                                          self.device, self.clock.limit_s)
        self.reason = why_stop(False, self.stopper, self.clock)  # set if it had ended when it was saved
        return state

    def next_step(self) -> bool:
        """Advance to the next step; False once the run has ended."""
        if self.reason is not None or self.step >= self.max_steps:
            return False
        self.step += 1
        return True

    def end_step(self, metrics: dict[str, Any], evaluated: bool, saved: str | None = None, **extras: Any) -> None:
        """After a step: at an evaluation save the loop state (with the loop's ``extras``),
        whose path the callback then gets instead of ``saved``; then decide whether to stop."""
        if evaluated and self.state_path is not None:
            save_state(self.state_path, loop_state(self.run, self.step, self.model, self.optimizer, self.stopper,
                                                   self.clock, self.generator, self.device, **extras))
            saved = str(self.state_path)
        self.reason = why_stop(notify(self.callback, self.step, metrics, saved), self.stopper, self.clock)
