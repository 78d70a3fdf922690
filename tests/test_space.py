"""The paper grid's trial lists: sizes, and the fine-tuning order (round robin over cells)."""

from __future__ import annotations

from sweeps import space


def paper_checkpoints(preset) -> dict[str, dict]:
    pre = space.pretrain_trials({"name": "rel-f1"}, preset, {})
    return {t["key"]: {"path": f"/ckpt/{t['key']}", "backbone": t["backbone"]} for t in pre}


def test_paper_grid_sizes_and_round_robin_order():
    preset = space.paper_preset()
    ckpts = paper_checkpoints(preset)
    assert len(ckpts) == 24  # 2 backbones x 2 layers x 2 aggr x 3 corruption
    tasks = ["driver-dnf", "driver-top3", "driver-position"]
    trials = space.finetune_trials({"name": "rel-f1"}, tasks, preset, {}, ckpts)
    assert len(trials) == 216  # 3 tasks x (2 x 12 B + 24 P + 24 PF)
    keys = [t["key"] for t in trials]
    assert len(set(keys)) == len(keys)

    cell = [(t["task"], t["table_model"], t["regime"]) for t in trials]
    assert len(set(cell[:18])) == 18  # the first round touches every cell of Table 3 once
    # every prefix is balanced: cell counts differ by at most one
    for stop in (18, 40, 100):
        counts = {c: cell[:stop].count(c) for c in set(cell)}
        assert max(counts.values()) - min(counts.values()) <= 1
    # within a cell the generation order is kept (B: layers, aggr, seed)
    b = [t["key"] for t in trials if t["task"] == "driver-dnf" and t["table_model"] == "linear" and t["regime"] == "B"]
    assert b[:3] == ["driver-dnf-B-linear-L2-sum-s0", "driver-dnf-B-linear-L2-sum-s1", "driver-dnf-B-linear-L2-sum-s2"]
