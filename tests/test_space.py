"""The paper grid's trial lists: sizes, and the fine-tuning order (round robin over cells)."""

from __future__ import annotations

from dataclasses import replace

from relcore.data import DatasetSpec
from sweeps import space

F1 = DatasetSpec("rel-f1")


def paper_checkpoints(preset) -> list[space.Checkpoint]:
    return [space.Checkpoint(t.key, f"/ckpt/{t.key}", t.backbone, t.pretrain.corruption)
            for t in space.pretrain_trials(F1, preset)]


def test_paper_grid_sizes_and_round_robin_order():
    preset = space.paper_preset()
    ckpts = paper_checkpoints(preset)
    assert len(ckpts) == 24  # 2 backbones x 2 layers x 2 aggr x 3 corruption
    tasks = ["driver-dnf", "driver-top3", "driver-position"]
    trials = space.finetune_trials(F1, tasks, preset, ckpts)
    assert len(trials) == 288  # 3 tasks x (2 x 12 B + 2 x 12 R + 24 P + 24 PF)
    assert len(trials) == 3 * preset.grid.finetune_trials_per_task()  # what status.py plans
    keys = [t.key for t in trials]
    assert len(set(keys)) == len(keys)

    cell = [(t.task, t.table_model, t.regime) for t in trials]
    assert len(set(cell[:24])) == 24  # the first round touches every cell (Table 3's and R's) once
    # every prefix is balanced: cell counts differ by at most one
    for stop in (24, 40, 100):
        counts = {c: cell[:stop].count(c) for c in set(cell)}
        assert max(counts.values()) - min(counts.values()) <= 1
    # within a cell the generation order is kept (B: layers, aggr, seed)
    b = [t.key for t in trials if t.task == "driver-dnf" and t.table_model == "linear" and t.regime == "B"]
    assert b[:3] == ["driver-dnf-B-linear-L2-sum-s0", "driver-dnf-B-linear-L2-sum-s1", "driver-dnf-B-linear-L2-sum-s2"]
    # R mirrors B: the same configurations and seeds, frozen, no checkpoint
    r = [t for t in trials if t.task == "driver-dnf" and t.table_model == "linear" and t.regime == "R"]
    assert [t.key.replace("-R-", "-B-") for t in r] == b
    assert all(t.checkpoint is None and t.finetune.mode == "R" and t.corruption is None for t in r)
    # P and PF carry their checkpoint's corruption rate and the preset's protocol
    p = next(t for t in trials if t.key == "driver-dnf-P-resnet-L3-mean-c0.4-s0")
    assert (p.corruption, p.protocol, p.pretrain_key) == (0.4, "paper", "resnet-L3-mean-c0.4-s0")


def test_finetune_seeds_repeat_every_checkpoint():
    """--finetune-seeds K: each checkpoint is fine-tuned with seeds 0..K-1 in P and PF."""
    preset = space.paper_preset()
    preset.grid = replace(preset.grid, finetune_seeds=2)
    trials = space.finetune_trials(F1, ["driver-dnf"], preset, paper_checkpoints(preset))
    assert len(trials) == 2 * 12 * 2 + 24 * 2 * 2 == preset.grid.finetune_trials_per_task()
    p = sorted((t.key, t.finetune.seed) for t in trials if t.pretrain_key == "linear-L2-sum-c0.2-s0")
    assert p == [("driver-dnf-P-linear-L2-sum-c0.2-s0", 0), ("driver-dnf-P-linear-L2-sum-c0.2-s0-f1", 1),
                 ("driver-dnf-PF-linear-L2-sum-c0.2-s0", 0), ("driver-dnf-PF-linear-L2-sum-c0.2-s0-f1", 1)]


def test_reference_preset_fine_tunes_as_the_reference_code(f1_raw_dir, f1_dataset):
    """--preset reference: per task and depth, lr 5e-3, halving fan-outs, L1, 20 epochs of
    full batches over the task's real training table, validation every epoch, patience 10."""
    import pytest

    from relcore.data import DatasetSpec, load_task
    from relcore.errors import RelcoreError

    tasks = ["driver-dnf", "driver-top3", "driver-position"]
    spec = DatasetSpec("rel-f1", raw_dir=f1_raw_dir)
    rows = {t: len(load_task(spec, f1_dataset, t).get_table("train").df) for t in tasks}
    assert rows == {"driver-dnf": 11411, "driver-top3": 1353, "driver-position": 7453}  # SOURCE.md
    preset = space.get_preset("reference")
    trials = space.finetune_trials(F1, tasks, preset, paper_checkpoints(preset), rows)
    assert len(trials) == 288  # the paper's grid and R; only the fine-tuning settings differ
    assert preset.db_cut == "full" and {t.protocol for t in trials} == {"reference"}
    by_key = {t.key: t.finetune.to_dict() for t in trials}
    top3 = by_key["driver-top3-PF-resnet-L3-sum-c0.4-s0"]
    assert (top3["lr"], top3["fanouts"], top3["max_steps"], top3["eval_every"], top3["patience"]) == \
        (5e-3, [128, 64, 32], 40, 2, 10)  # 1353 // 512 = 2 batches an epoch
    dnf = by_key["driver-dnf-B-linear-L2-mean-s1"]
    assert (dnf["fanouts"], dnf["max_steps"], dnf["eval_every"], dnf["seed"], dnf["mode"]) == \
        ([128, 64], 440, 22, 1, "B")
    assert by_key["driver-position-P-linear-L2-sum-c0.2-s0"]["regression_loss"] == "l1"
    # an overridden step budget still caps the run (--finetune-steps)
    short = space.get_preset("reference")
    short.finetune = replace(short.finetune, max_steps=30)
    capped = space.finetune_trials(F1, ["driver-dnf"], short, [], rows)
    assert {t.finetune.max_steps for t in capped} == {30}
    with pytest.raises(RelcoreError, match="training rows"):
        space.finetune_trials(F1, tasks, preset, [], None)
    # the paper preset is untouched by the rows
    paper = space.paper_preset()
    assert space.finetune_trials(F1, tasks, paper, [], rows) == \
        space.finetune_trials(F1, tasks, paper, [])


def test_trials_round_trip_through_rays_param_space_and_mlflows_params():
    """A typed trial becomes plain data for Ray and, flattened to strings, MLflow params;
    both come back to the same trial (status.py rebuilds trials.csv from the params)."""
    from sweeps.tracking import flatten, unflatten

    preset = space.get_preset("reference")
    dataset = DatasetSpec("rel-f1", raw_dir="/data/ergast-f1", db_cut="full")
    rows = {"driver-position": 7453}
    pre = space.pretrain_trials(dataset, preset)
    ckpts = [space.Checkpoint(t.key, f"/ckpt/{t.key}", t.backbone, t.pretrain.corruption) for t in pre]
    trials = space.finetune_trials(dataset, ["driver-position"], preset, ckpts, rows)
    for trial in [pre[5], *trials[:30]]:
        kind = type(trial)
        assert kind.from_dict(trial.to_dict()) == trial
        params = {k: str(v) for k, v in flatten(trial.to_dict()).items()}  # what MLflow stores
        assert kind.from_dict(unflatten(params)) == trial, trial.key
    assert space.trial_config({"trial": trials[0].to_dict()}) == trials[0]
    assert space.trial_config({"trial": pre[0].to_dict()}) == pre[0]
