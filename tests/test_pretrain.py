"""Contrastive pretraining end to end on the synthetic database."""

from __future__ import annotations

import json

import pytest
import torch

from relcore.models import BackboneConfig, load_backbone
from relcore.pretrain import PretrainConfig, pretrain
from relcore.sampling.hgt import HGSampler


@pytest.fixture(scope="module")
def pretrained(synthetic_dataset, synthetic_graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    seen = []
    result = pretrain(
        synthetic_graph, BackboneConfig(table_model="linear", layers=2, aggr="sum"),
        PretrainConfig(max_steps=300, eval_every=50, val_subgraphs=10, patience=100, seed=0),
        max_time=int(synthetic_dataset.val_timestamp.timestamp()), out_dir=out,
        callback=lambda step, metrics, ckpt: seen.append((step, metrics, ckpt)) and None,
    )
    return result, out, seen


def test_every_term_drops_below_70_percent(pretrained):
    result, _, _ = pretrained
    assert result.steps == 300
    for term in ("row", "link", "context"):
        # μ-normalised: ≈ 1 at chance (row starts lower: clean and corrupted views agree)
        assert 0.3 < result.initial[term] < 1.2
        assert result.best[term] < 0.7 * result.initial[term], (term, result.initial, result.best)


def test_callback_sees_every_step_and_checkpoints(pretrained):
    result, out, seen = pretrained
    assert [s for s, _, _ in seen] == list(range(0, 301))
    evals = [m for _, m, _ in seen if "val/loss" in m]
    assert len(evals) == 1 + 300 // 50
    assert all(c is None or c.endswith("backbone.pt") for _, _, c in seen)
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 301 and "train/link" in history[-1]


def test_checkpoint_round_trip(pretrained, synthetic_graph):
    result, _, _ = pretrained
    backbone = load_backbone(result.checkpoint, synthetic_graph)
    again = load_backbone(result.checkpoint, synthetic_graph)
    batch = HGSampler(synthetic_graph, num_samples=16, iterations=2).sample(16, generator=torch.Generator().manual_seed(3))
    backbone.eval(), again.eval()
    with torch.no_grad():
        a, b = backbone(batch), again(batch)
    assert all(torch.equal(a[t], b[t]) for t in a)
    # the checkpoint holds the best validation state, not the last one
    saved = torch.load(result.checkpoint, weights_only=False)
    assert saved["extra"]["step"] == result.best_step


def test_seeded_runs_are_reproducible(synthetic_dataset, synthetic_graph):
    cfg = PretrainConfig(max_steps=5, eval_every=5, val_subgraphs=2, seed=7)
    cutoff = int(synthetic_dataset.val_timestamp.timestamp())
    a = pretrain(synthetic_graph, BackboneConfig(), cfg, max_time=cutoff)
    b = pretrain(synthetic_graph, BackboneConfig(), cfg, max_time=cutoff)
    assert a.final == b.final


def test_interrupted_run_continues_to_the_same_result(synthetic_dataset, synthetic_graph, tmp_path):
    """Stopped after its 2nd evaluation and continued from the saved state, pretraining
    ends exactly like the run that never stopped: same subgraphs, corruptions, negatives
    and dropout, hence the same losses and the same best backbone."""
    cfg = PretrainConfig(max_steps=30, eval_every=10, val_subgraphs=2, patience=10, seed=3)
    bb, cutoff = BackboneConfig(table_model="resnet"), int(synthetic_dataset.val_timestamp.timestamp())
    ref = pretrain(synthetic_graph, bb, cfg, max_time=cutoff, out_dir=tmp_path / "whole")

    state, handed = tmp_path / "state.pt", {}

    def stop_at_step_20(step, metrics, saved):
        handed[step] = saved
        return step == 20

    first = pretrain(synthetic_graph, bb, cfg, max_time=cutoff, out_dir=tmp_path / "cut",
                     callback=stop_at_step_20, state_path=state)
    assert first.stop_reason == "callback" and first.steps == 20
    assert {s: p for s, p in handed.items() if p is not None and s > 0} == {10: str(state), 20: str(state)}
    second = pretrain(synthetic_graph, bb, cfg, max_time=cutoff, out_dir=tmp_path / "cut", state_path=state)
    strip = lambda h: [{k: v for k, v in m.items() if k != "time/seconds"} for m in h]  # noqa: E731
    assert second.steps == 30 and strip(second.history) == strip(ref.history)
    assert (second.initial, second.best, second.final, second.best_step) == \
        (ref.initial, ref.best, ref.final, ref.best_step)
    a, b = (torch.load(p / "backbone.pt", weights_only=False)["state_dict"] for p in (tmp_path / "whole", tmp_path / "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
