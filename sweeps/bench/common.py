"""Helpers the benchmark scripts share: reports, rel-f1 loading, step timing, PyG loader views."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

# torch, torch_geometric and relcore are imported inside the helpers that need them:
# bench_scale.py and bench_memory.py import this module in parent processes that only
# start children and must not carry torch into the children whose peak RSS they report.
if TYPE_CHECKING:
    from torch_geometric.data import HeteroData

    from relcore.graph import RelGraph
    from relcore.models import BackboneConfig


class Report:
    """Lines printed as they come and rewritten to ``path`` after each (a timeout keeps them)."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.lines = path, []

    @classmethod
    def start(cls, path: str | None, title: str, note: str) -> "Report":
        """A report opened with its title and when, where and how it was measured."""
        import torch

        out = cls(Path(path) if path else None)
        out(f"# {title}")
        out(f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores; torch {torch.__version__}; "
            f"{note}; load average at start {os.getloadavg()[0]:.2f}")
        return out

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)
        if self.path is not None:
            self.path.write_text("\n".join(self.lines) + "\n")


def load_f1(raw_dir: str | None):
    """(spec, dataset, graph, pretraining cut-off) of rel-f1 from its raw files."""
    from relcore.data import DatasetSpec, load_dataset
    from relcore.graph import build_graph

    spec = DatasetSpec("rel-f1", raw_dir=raw_dir)
    dataset = load_dataset(spec)
    return spec, dataset, build_graph(dataset.get_db()), int(dataset.val_timestamp.timestamp())


def cost_only_checkpoint(graph, backbone: BackboneConfig, max_time: int, out_dir: Path, device: str = "cpu") -> str:
    """A pretrained ``backbone.pt`` after one step, for P and P&F runs that measure cost:
    their metrics would be meaningless, their cost is not."""
    from relcore.pretrain import PretrainConfig, pretrain

    pretrain(graph, backbone, PretrainConfig(max_steps=1, val_subgraphs=1, device=device), max_time, out_dir=out_dir)
    return str(out_dir / "backbone.pt")


def step_timer():
    """A loop callback recording when each training step was reported, and
    ``median_step(skip=0)``: the median gap between consecutive pure training steps
    (neither end ran a validation pass), leaving out steps ``<= skip`` (warm-up)."""
    stamps: list[tuple[int, float, bool]] = []

    def callback(step, metrics, checkpoint=None):
        evaluated = any(k.startswith("val/") for k in metrics)
        stamps.append((step, time.perf_counter(), evaluated))
        return False

    def median_step(skip: int = 0) -> float:
        gaps = [b[1] - a[1] for a, b in zip(stamps, stamps[1:])
                if b[0] == a[0] + 1 and b[0] > skip and not b[2] and not a[2]]
        return statistics.median(gaps) if gaps else float("nan")

    return callback, median_step


def pyg_view(graph: RelGraph) -> HeteroData:
    """The graph's tensors (shared, not copied) with explicit ``num_nodes`` for PyG."""
    from torch_geometric.data import HeteroData

    out = HeteroData()
    for t in graph.node_types:
        out[t].tf = graph.data[t].tf
        out[t].num_nodes = graph.num_nodes(t)
        if "time" in graph.data[t]:
            out[t].time = graph.data[t].time
    for et in graph.edge_types:
        out[et].edge_index = graph.data[et].edge_index
    return out


def cycling(loader) -> Callable[[int], object]:
    """``next`` over a loader, restarting it when exhausted."""
    state = {"it": iter(loader)}

    def call(_: int):
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            return next(state["it"])

    return call
