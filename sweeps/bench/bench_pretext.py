"""How saturated is the pretext task? Random backbones against pretrained ones, same subgraphs.

    .venv/bin/python sweeps/bench/bench_pretext.py --raw-dir ../shared/data/ergast-f1 --db-cut full \\
        --checkpoint /work/grid/ray/parity-linear-L2-sum-pretrain/*/checkpoint_*/backbone.pt

For each checkpoint (and its pretraining settings, read from the file) this rebuilds the
run's fixed validation subgraphs (same seed, rows up to the validation timestamp) and
reports, per backbone:

- the normalised loss terms (Eq. 5: 1.0 at chance) of a randomly initialised backbone of
  the same architecture with the objective's initial weights (what step 0 of pretraining
  evaluates), against the pretrained backbone's terms at its best step (stored in the
  checkpoint);
- row identification accuracy: the share of corrupted rows whose nearest clean row of
  the same table in the subgraph (cosine similarity of backbone embeddings, no learned
  scoring matrix) is their own, for the random and the pretrained backbone, next to
  chance (1 / rows of the table in the subgraph).

If random features already pick the clean row out of the batch, the row term has little
left to teach: the uncorrupted cells match. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json

import torch

from relcore.data import DatasetSpec, get_db, load_dataset
from relcore.graph import build_graph
from relcore.loop import seed_everything
from relcore.losses import ContrastiveObjective
from relcore.models import GraphMeta, RDLBackbone, load_backbone, read_checkpoint
from relcore.pretrain import ContrastiveStep, PretrainConfig, evaluate, pretext_sources, validation_pairs
from relcore.sampling.batch import disjoint_union


@torch.no_grad()
def identification(backbone: RDLBackbone, val_set) -> tuple[float, float]:
    """(accuracy, chance) of picking each corrupted row's clean row among its table's rows
    in the subgraph by cosine similarity, pooled over tables and subgraphs."""
    backbone.eval()
    hits = rows = 0
    chance = 0.0
    for clean, corrupted in val_set:
        out = backbone(disjoint_union(clean, corrupted))
        for t, x in out.items():
            n = clean[t].num_nodes
            if n < 2:
                continue
            h = torch.nn.functional.normalize(x[:n], dim=-1)
            h_hat = torch.nn.functional.normalize(x[n:], dim=-1)
            picked = (h_hat @ h.T).argmax(dim=1)
            hits += int((picked == torch.arange(n)).sum())
            rows += n
            chance += 1.0  # sum over rows of 1/n
    return hits / max(rows, 1), chance / max(rows, 1)


def measure(graph, max_time: int, path: str) -> dict:
    ckpt = read_checkpoint(path)
    config = PretrainConfig.from_dict({**ckpt.extra.get("pretrain", {}), "device": "cpu"})
    sampler, pool = pretext_sources(graph, config, max_time)
    seed_everything(config.seed)  # the backbone pretraining started from
    random = RDLBackbone(ckpt.config, GraphMeta.from_graph(graph))
    objective = ContrastiveObjective(random.node_types, random.edge_types, ckpt.config.channels, n_max=config.n_max)
    val_set = validation_pairs(sampler, pool, config, torch.device("cpu"))
    at_init = evaluate(ContrastiveStep(random, objective), val_set)
    pretrained = load_backbone(path, graph)
    acc_random, chance = identification(random, val_set)
    acc_pretrained, _ = identification(pretrained, val_set)
    cfg = ckpt.config
    return {"key": f"{cfg.table_model}-L{cfg.layers}-{cfg.aggr}-c{config.corruption}",
            "random": at_init, "pretrained": ckpt.extra.get("val", {}), "best_step": ckpt.extra.get("step"),
            "id_random": acc_random, "id_pretrained": acc_pretrained, "id_chance": chance}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raw-dir", required=True)
    p.add_argument("--db-cut", default="full", choices=["test", "full"])
    p.add_argument("--checkpoint", nargs="+", required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dataset = load_dataset(DatasetSpec("rel-f1", raw_dir=args.raw_dir, db_cut=args.db_cut))
    graph = build_graph(get_db(dataset, args.db_cut))
    max_time = int(dataset.val_timestamp.timestamp())
    rows = [measure(graph, max_time, c) for c in args.checkpoint]
    print("| checkpoint | best step | row: random / pretrained | link | context | "
          "row identification: random / pretrained (chance) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        terms = " | ".join(f"{r['random'][t]:.3f} / {r['pretrained'].get(t, float('nan')):.4f}"
                           for t in ("row", "link", "context"))
        print(f"| {r['key']} | {r['best_step']} | {terms} | {r['id_random']:.1%} / {r['id_pretrained']:.1%} "
              f"({r['id_chance']:.1%}) |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
