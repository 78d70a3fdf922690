"""The main job: a two-stage Ray Tune sweep with MLflow tracking.

    python sweeps/run_grid.py --cluster auto --dataset rel-f1 --raw-dir ../shared/data/ergast-f1 --preset paper

1. pretraining: a grid per backbone (layers x aggregation x corruption);
2. fine-tuning: per task and backbone, B and R for every (layers, aggr, seed) and P / PF
   for every pretrained checkpoint and fine-tuning seed;
3. top-5 aggregation by validation metric, reports, and an MLflow ``summary`` run.

Bad input is refused before any trial starts; ``--resume`` continues an interrupted
sweep from its storage path.
"""

from __future__ import annotations

import argparse
import os
import sys

# Before torch loads (in this driver; workers get it through Ray's runtime_env):
# spinning OpenMP workers stall badly when cores are shared.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from relcore.errors import RelcoreError  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run_grid.py", description=__doc__.splitlines()[0])
    p.add_argument("--cluster", default="auto", help="auto | local | host:port | ray://host:port")
    p.add_argument("--dataset", default="synthetic", help="rel-f1 | synthetic[:N] | sqlite:PATH")
    p.add_argument("--raw-dir", help="raw Ergast CSVs for rel-f1 (or env RELCORE_F1_RAW_DIR)")
    p.add_argument("--time-col", action="append", default=[], metavar="TABLE.COL")
    p.add_argument("--tasks", help="comma-separated task names (default: the preset's / all entity tasks)")
    p.add_argument("--backbones", help="comma-separated: linear,resnet")
    p.add_argument("--layers", help="comma-separated GNN depths, e.g. 2,3")
    p.add_argument("--aggr", help="comma-separated: sum,mean")
    p.add_argument("--corruption", help="comma-separated corruption rates in (0, 1)")
    p.add_argument("--preset", default="quick", help="paper | reference (the paper's grid, fine-tuned as its "
                   "reference code does: lr 5e-3, fan-outs halving per hop, 20 epochs) | quick")
    p.add_argument("--search", default="grid", choices=["grid", "optuna"])
    p.add_argument("--num-samples", type=int, default=8, help="pretraining trials with --search optuna")
    p.add_argument("--name", default="relcore-sweep", help="sweep name: MLflow experiment and storage folder")
    p.add_argument("--mlflow-uri", default="sqlite:///mlruns.db")
    p.add_argument("--storage", default="ray_results", help="local dir or pyarrow-fs URI for Tune results")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    p.add_argument("--pretrained-from", metavar="NAME", help="skip pretraining: fine-tune the checkpoints "
                   "of sweep NAME (same --storage), which must have pretrained this grid the same way")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0)
    p.add_argument("--memory-per-trial", type=float, default=0.0, help="GiB reserved per trial (0 = none)")
    p.add_argument("--max-failures", type=int, default=1, help="retries of a failing trial")
    p.add_argument("--seeds", type=int, help="B and R seeds per (layers, aggr) (paper preset: 3)")
    p.add_argument("--finetune-seeds", type=int, help="P and PF seeds per checkpoint (default 1, as the paper)")
    p.add_argument("--db-cut", choices=["test", "full"], help="database the graph is built from: test = "
                   "relbench's cut at the test timestamp (paper/quick presets), full = the whole database "
                   "(reference preset, as the paper's code); pretraining samples rows up to the validation "
                   "timestamp either way")
    p.add_argument("--pretrain-time-limit", type=float, default=4 * 3600.0, help="seconds per trial")
    p.add_argument("--finetune-time-limit", type=float, default=2 * 3600.0, help="seconds per trial")
    p.add_argument("--pretrain-steps", type=int, help="override the preset's max pretraining steps")
    p.add_argument("--finetune-steps", type=int, help="override the preset's max fine-tuning steps")
    p.add_argument("--finetune-precision", default="fp32", choices=["fp32", "bf16"],
                   help="fine-tuning forward passes: fp32 (the paper) or bf16 mixed precision")
    p.add_argument("--batch-order", default="random", choices=["random", "time"],
                   help="fine-tuning batches: seeds of any timestamps (random, the paper) or of a few whole "
                   "timestamps (time); each seed once per epoch either way")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray instance (default: all)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # Checkpoint-heavy trials make Tune warn about snapshot frequency on every report.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    try:
        from sweeps.sweep import Sweep, SweepOptions

        sweep = Sweep.from_args(SweepOptions.from_namespace(args))  # validates everything before any trial starts
        sweep.run()
    except RelcoreError as exc:
        print(f"run_grid: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("run_grid: interrupted; continue with --resume", file=sys.stderr)
        return 130
    finally:
        ray = sys.modules.get("ray")  # imported only once the arguments were valid
        if ray is not None and ray.is_initialized():
            ray.shutdown()  # an error after connecting leaves no Ray behind (main() run in-process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
