"""Re-run one pretraining trial of the paper grid outside Ray and print its best losses.

    .venv/bin/python sweeps/bench/rerun_pretrain.py --raw-dir ../shared/data/ergast-f1 \\
        --table-model linear --layers 2 --aggr sum --corruption 0.2
    # the same trial with an older relcore, e.g. the one a past sweep ran:
    git worktree add /tmp/old <commit>
    PYTHONPATH=/tmp/old .venv/bin/python sweeps/bench/rerun_pretrain.py ...

A reproducibility check: with one torch thread and the trial's seed, the printed
``best`` losses can be compared to the last digit with a sweep's MLflow record of the
same trial (``best/val/*``) or with another relcore version. Only relcore's public API
is used, so any checkout that has it can be put first on ``PYTHONPATH``. Every setting
not given here is relcore's default, which is the paper's (``PretrainConfig``,
``BackboneConfig``).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch

import relcore
from relcore.data import DatasetSpec, load_dataset
from relcore.graph import build_graph
from relcore.models import BackboneConfig
from relcore.pretrain import PretrainConfig, pretrain


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raw-dir", required=True, help="raw Ergast CSVs (rel-f1)")
    p.add_argument("--table-model", default="linear", choices=["linear", "resnet"])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--aggr", default="sum", choices=["sum", "mean"])
    p.add_argument("--corruption", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)  # as a sweep trial with --cpus-per-trial 1
    dataset = load_dataset(DatasetSpec("rel-f1", raw_dir=args.raw_dir))
    graph = build_graph(dataset.get_db())
    backbone = BackboneConfig(table_model=args.table_model, layers=args.layers, aggr=args.aggr)
    config = PretrainConfig(corruption=args.corruption, seed=args.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = pretrain(graph, backbone, config, max_time=int(dataset.val_timestamp.timestamp()), out_dir=out)
    print(json.dumps({"relcore": relcore.__file__, "torch": torch.__version__, "cpu": _cpu_model(),
                      "best": result.best, "steps": result.steps, "stop": result.stop_reason,
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
