"""Scale: graph build, peak memory and step times on synthetic databases of growing size.

For each size (default 100k, 1M and 5M rows; rel-stack is 5.4M rows) a fresh child
process, so that its peak RSS is its own:

1. generates ``synthetic:N`` (relcore's seeded generator) and builds the graph into an
   empty cache directory (the build is timed, not a cache hit);
2. pretrains (both backbones by default, relcore's paper defaults: batch 64, 64 nodes
   per type x 3 HGSampling iterations, 2 layers, sum, corruption 0.2) for ``--pt-steps``
   steps, pruned to the validation timestamp as the sweep does;
3. fine-tunes mode B on ``customer-churn`` (batch 512, fan-out 128 per hop) for
   ``--ft-steps`` steps.

Step times are the median gap between consecutive steps as the loops report them
(their own callback), so the loops' validation passes are excluded; peak RSS is the
child's ``ru_maxrss`` at its end (build + pretraining + fine-tuning together). The
"runs" columns are whole ``pretrain()`` / ``finetune()`` calls: set-up (samplers' CSR,
the fixed validation subgraphs), the steps, and one validation pass (fine-tuning's
covers the whole validation table, which grows with the database).

    .venv/bin/python sweeps/bench/bench_scale.py            # writes results/scale.md

"Flat in database size" is read off the step-time columns: the samplers draw a fixed
budget per step, so a step should cost the same on 100k or 5M rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from common import step_timer

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def measure(size: str, args: argparse.Namespace) -> dict:
    """Everything for one database size, in this process (run it in a fresh child)."""
    import torch

    torch.set_num_threads(args.threads)
    from relcore.data import DatasetSpec, load_dataset, load_task
    from relcore.finetune import FinetuneConfig, finetune
    from relcore.graph import build_graph
    from relcore.models import BackboneConfig
    from relcore.pretrain import PretrainConfig, pretrain

    out: dict = {"size": size}
    spec = DatasetSpec(f"synthetic:{size}")
    t0 = time.perf_counter()
    dataset = load_dataset(spec)
    db = dataset.get_db()
    out["generate_s"] = time.perf_counter() - t0
    out["rows"] = int(sum(len(t.df) for t in db.table_dict.values()))
    with tempfile.TemporaryDirectory(prefix="relcore-scale-") as cache:
        t0 = time.perf_counter()
        graph = build_graph(db, cache_root=cache)
        out["build_s"] = time.perf_counter() - t0
    out["links"] = int(sum(graph.data[et].edge_index.size(1) for et in graph.data.edge_types) // 2)
    max_time = int(dataset.val_timestamp.timestamp())

    for table_model in args.backbones.split(","):
        callback, median_step = step_timer()
        cfg = PretrainConfig(max_steps=args.pt_steps, eval_every=args.pt_steps, val_subgraphs=2,
                             seed=args.seed)
        t0 = time.perf_counter()
        pretrain(graph, BackboneConfig(table_model=table_model), cfg, max_time, callback=callback)
        out[f"pretrain_{table_model}_wall_s"] = time.perf_counter() - t0
        out[f"pretrain_{table_model}_s_per_step"] = median_step()

    t0 = time.perf_counter()
    task = load_task(spec, dataset, "customer-churn")
    for split in ("train", "val", "test"):
        task.get_table(split)  # relbench builds (and caches) the task tables
    out["task_tables_s"] = time.perf_counter() - t0
    out["finetune_nodes"], out["finetune_rows"] = _finetune_batch_size(graph, task, args)
    callback, median_step = step_timer()
    cfg = FinetuneConfig(mode="B", max_steps=args.ft_steps, eval_every=args.ft_steps, seed=args.seed)
    t0 = time.perf_counter()
    finetune(graph, task, "customer-churn", cfg, BackboneConfig(table_model=args.ft_backbone),
             callback=callback)
    out["finetune_wall_s"] = time.perf_counter() - t0
    out[f"finetune_{args.ft_backbone}_s_per_step"] = median_step()
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return out


def _finetune_batch_size(graph, task, args: argparse.Namespace) -> tuple[int, int]:
    """Nodes and distinct rows of one fine-tuning batch (512 training seeds, fan-out 128)."""
    import torch

    from relcore.finetune import SplitTable
    from relcore.sampling import TemporalNeighborSampler

    train = SplitTable.of(task, "train")
    gen = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(train.ids), generator=gen)[:512]
    batch = TemporalNeighborSampler(graph, 128, num_layers=2).sample(
        task.entity_table, train.ids[idx], train.times[idx], generator=gen)
    nodes = sum(batch[t].num_nodes or 0 for t in batch.node_types)
    rows = sum(len(batch[t].tf) for t in batch.node_types if "tf" in batch[t])
    return int(nodes), int(rows)


def run_child(size: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", size, "--threads", str(args.threads),
           "--pt-steps", str(args.pt_steps), "--ft-steps", str(args.ft_steps),
           "--backbones", args.backbones, "--ft-backbone", args.ft_backbone, "--seed", str(args.seed)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"size": size, "error": tail[0]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - t0
    return result


def table(results: list[dict], args: argparse.Namespace) -> str:
    pt_cols = [f"pretrain_{b}_s_per_step" for b in args.backbones.split(",")]
    ft_col = f"finetune_{args.ft_backbone}_s_per_step"
    head = ["database", "rows", "links", "graph build s", "peak RSS GiB",
            *[f"pretrain {c.split('_')[1]} s/step" for c in pt_cols], f"fine-tune {args.ft_backbone} s/step",
            "fine-tune batch: nodes (distinct rows)",
            "task tables s", "pretrain runs s", "fine-tune run s", "child wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(f"| synthetic:{r['size']} | error: {r['error']} |")
            continue
        cells = [f"synthetic:{r['size']}", f"{r['rows']:,}", f"{r['links']:,}", f"{r['build_s']:.1f}",
                 f"{r['peak_rss_gib']:.2f}", *[f"{r[c]:.3f}" for c in pt_cols], f"{r[ft_col]:.3f}",
                 f"{r['finetune_nodes']:,} ({r['finetune_rows']:,})", f"{r['task_tables_s']:.0f}",
                 " + ".join(f"{r[c.replace('s_per_step', 'wall_s')]:.0f}" for c in pt_cols),
                 f"{r['finetune_wall_s']:.0f}", f"{r['wall_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    base = next((r for r in results if "error" not in r), None)
    if base is not None:
        lines.append("")
        lines.append(f"Step time relative to synthetic:{base['size']} (1.00 = flat):")
        lines.append("")
        for r in results:
            if "error" in r:
                continue
            ratios = ", ".join(f"{c.split('_')[0]} {c.split('_')[1]} {r[c] / base[c]:.2f}"
                               for c in [*pt_cols, ft_col])
            lines.append(f"- synthetic:{r['size']}: {ratios}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100k,1m,5m")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pt-steps", type=int, default=30)
    parser.add_argument("--ft-steps", type=int, default=12)
    parser.add_argument("--backbones", default="linear,resnet")
    parser.add_argument("--ft-backbone", default="resnet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "scale.md"))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return 0

    results = []
    for size in args.sizes.split(","):
        r = run_child(size, args)
        print(json.dumps(r), flush=True)
        results.append(r)
    text = table(results, args)
    print(text)
    if not args.no_write:
        load = os.getloadavg()
        header = (f"# Scale on synthetic databases\n\nRun {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
                  f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                  f"{args.threads} torch thread(s), load average at the end {load[0]:.1f}.\n\n"
                  f"Command: `.venv/bin/python sweeps/bench/bench_scale.py "
                  f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n\n")
        Path(args.out).write_text(header + text + "\n")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
