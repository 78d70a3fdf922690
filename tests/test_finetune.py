"""Fine-tuning B / P / PF: regimes, leakage, learning, and the CLI's bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from relcore.data import DatasetSpec, load_task
from relcore.errors import RelcoreError
from relcore.finetune import FinetuneConfig, TaskModel, finetune, freeze_for_mode
from relcore.models import BackboneConfig
from relcore.pretrain import PretrainConfig, pretrain

SPEC = DatasetSpec("synthetic")
FAST = dict(batch_size=128, max_steps=60, eval_every=20, patience=5, lr=1e-3)


@pytest.fixture(scope="module")
def churn(synthetic_dataset):
    return load_task(SPEC, synthetic_dataset, "customer-churn")


@pytest.fixture(scope="module")
def checkpoint(synthetic_dataset, synthetic_graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    result = pretrain(synthetic_graph, BackboneConfig(table_model="linear"),
                      PretrainConfig(max_steps=20, eval_every=10, val_subgraphs=3),
                      max_time=int(synthetic_dataset.val_timestamp.timestamp()), out_dir=out)
    return result.checkpoint


def test_graph_beats_row_only_baseline(synthetic_graph, churn):
    """The label depends on what customers bought: neighbours must help.

    The row-only baseline is the same model with fan-out 0: each seed sees its own row only.
    """
    bb = BackboneConfig(table_model="linear")
    graph = finetune(synthetic_graph, churn, "customer-churn", FinetuneConfig(fanouts=(16, 16), **FAST), bb)
    rows = finetune(synthetic_graph, churn, "customer-churn", FinetuneConfig(fanouts=(0, 0), **FAST), bb)
    assert graph.val["roc_auc"] > rows.val["roc_auc"] + 0.1, (graph.val, rows.val)
    assert graph.test["roc_auc"] > 0.7


def test_split_tables_have_a_fixed_row_order(synthetic_dataset):
    """relbench's DuckDB-built task tables come in any order; the split tables must not."""
    from relcore.finetune import SplitTable

    a = SplitTable.of(load_task(SPEC, synthetic_dataset, "customer-churn"), "train")
    b = SplitTable.of(load_task(SPEC, synthetic_dataset, "customer-churn"), "train")
    assert torch.equal(a.ids, b.ids) and torch.equal(a.times, b.times) and torch.equal(a.y, b.y)
    assert bool((a.times[1:] >= a.times[:-1]).all())
    assert list(a.table.df.index) == list(range(len(a.ids)))  # evaluate() sees the same order


def test_bf16_mixed_precision_learns_like_fp32(synthetic_graph, churn):
    """bf16 autocast changes the products' rounding, not what the model learns."""
    bb = BackboneConfig(table_model="resnet")
    cfg = dict(FAST, fanouts=(16, 16))
    fp32 = finetune(synthetic_graph, churn, "customer-churn", FinetuneConfig(**cfg), bb)
    bf16 = finetune(synthetic_graph, churn, "customer-churn", FinetuneConfig(precision="bf16", **cfg), bb)
    losses = [h["train/loss"] for h in bf16.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert bf16.val["roc_auc"] > 0.7 and abs(bf16.val["roc_auc"] - fp32.val["roc_auc"]) < 0.05, (fp32.val, bf16.val)
    with pytest.raises(RelcoreError, match="precision"):
        FinetuneConfig(precision="fp8")


def test_frozen_backbone_is_bit_identical_after_P(synthetic_graph, churn, checkpoint):
    cfg = FinetuneConfig(mode="P", **{**FAST, "max_steps": 10, "eval_every": 5})
    from relcore.finetune import make_backbone
    from relcore.loop import seed_everything

    # The model finetune() starts from: same seed, same construction order.
    seed_everything(cfg.seed)
    start = TaskModel(make_backbone(synthetic_graph, "P", None, checkpoint), "customers")
    trainable = freeze_for_mode(start, "P")
    assert trainable and all(p.requires_grad for p in start.head.parameters())
    result = finetune(synthetic_graph, churn, "customer-churn", cfg, checkpoint=checkpoint)
    after = result.model
    for name, tensor in start.backbone.state_dict().items():
        if not name.startswith("temporal."):
            assert torch.equal(tensor, after.backbone.state_dict()[name]), name
    trained = after.head.state_dict()
    for name in ("lin1.weight", "lin1.bias", "lin2.weight", "lin2.bias"):  # every head weight moved
        assert not torch.equal(start.head.state_dict()[name], trained[name]), name
    assert result.steps == 10


def test_R_trains_the_head_on_a_frozen_random_backbone(synthetic_graph, churn):
    """R: the backbone B would start from (same seed), frozen like P; only the head and
    the temporal encoder train."""
    from relcore.finetune import make_backbone
    from relcore.loop import seed_everything

    cfg = FinetuneConfig(mode="R", **{**FAST, "max_steps": 10, "eval_every": 5})
    bb = BackboneConfig(table_model="linear")
    seed_everything(cfg.seed)
    start = TaskModel(make_backbone(synthetic_graph, "R", bb, None), "customers")
    result = finetune(synthetic_graph, churn, "customer-churn", cfg, bb)
    after = result.model.backbone.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in start.backbone.state_dict().items() if not k.startswith("temporal."))
    assert not torch.equal(start.head.state_dict()["lin1.weight"], result.model.head.state_dict()["lin1.weight"])
    assert result.mode == "R" and result.steps == 10 and 0.0 < result.val["roc_auc"] < 1.0


def test_PF_updates_the_backbone(synthetic_graph, churn, checkpoint):
    cfg = FinetuneConfig(mode="PF", **{**FAST, "max_steps": 5, "eval_every": 5})
    from relcore.finetune import make_backbone

    before = make_backbone(synthetic_graph, "PF", None, checkpoint).state_dict()
    model = finetune(synthetic_graph, churn, "customer-churn", cfg, checkpoint=checkpoint).model
    changed = [k for k, v in before.items() if not torch.equal(v, model.backbone.state_dict()[k])]
    assert any(k.startswith("gnn.") for k in changed) and any(k.startswith("table_models.") for k in changed)


def _without_clock(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "time/seconds"} for h in history]


@pytest.mark.parametrize("mode", ["B", "P"])
def test_interrupted_run_continues_to_the_same_result(synthetic_graph, churn, checkpoint, tmp_path, mode):
    """Stopped after its 2nd evaluation and continued from the saved state, a run ends
    exactly like the run that never stopped: same batches, neighbour samples and dropout
    masks (ResNet table models in B), hence the same losses, metrics and weights."""
    cfg = FinetuneConfig(mode=mode, **{**FAST, "max_steps": 30, "eval_every": 10, "patience": 10,
                                       "fanouts": (8, 8)})
    kw = dict(backbone_config=BackboneConfig(table_model="resnet")) if mode == "B" else dict(checkpoint=checkpoint)
    ref = finetune(synthetic_graph, churn, "customer-churn", cfg, **kw)

    state, handed = tmp_path / "state.pt", {}

    def stop_at_step_20(step, metrics, saved):
        handed[step] = saved
        return step == 20

    first = finetune(synthetic_graph, churn, "customer-churn", cfg, **kw, callback=stop_at_step_20,
                     state_path=state)
    assert first.stop_reason == "callback" and first.steps == 20
    assert {s for s, path in handed.items() if path is not None} == {10, 20}
    assert handed[20] == str(state) and state.is_file()

    second = finetune(synthetic_graph, churn, "customer-churn", cfg, **kw, state_path=state)
    assert second.steps == 30 and second.stop_reason == ref.stop_reason
    assert _without_clock(second.history) == _without_clock(ref.history)
    assert (second.val, second.test, second.best_step) == (ref.val, ref.test, ref.best_step)
    a, b = ref.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert second.seconds >= first.seconds  # the wall clock continues too


def test_saved_state_of_another_run_is_refused(synthetic_graph, churn, tmp_path):
    cfg = FinetuneConfig(**{**FAST, "max_steps": 5, "eval_every": 5, "fanouts": (4, 4)})
    state = tmp_path / "state.pt"
    finetune(synthetic_graph, churn, "customer-churn", cfg, BackboneConfig(), state_path=state)
    other = FinetuneConfig(**{**FAST, "max_steps": 5, "eval_every": 5, "fanouts": (4, 4), "seed": 1})
    with pytest.raises(RelcoreError, match=r"belongs to another run \(it differs in: seed\)"):
        finetune(synthetic_graph, churn, "customer-churn", other, BackboneConfig(), state_path=state)
    state.write_bytes(b"not a state")
    with pytest.raises(RelcoreError, match="cannot read the resumable state"):
        finetune(synthetic_graph, churn, "customer-churn", cfg, BackboneConfig(), state_path=state)


def test_regression_task_and_metrics(synthetic_dataset, synthetic_graph):
    task = load_task(SPEC, synthetic_dataset, "customer-rating")
    result = finetune(synthetic_graph, task, "customer-rating",
                      FinetuneConfig(fanouts=(16, 16), **FAST), BackboneConfig())
    assert result.metric == "mae" and {"mae", "rmse", "r2"} <= set(result.test)
    # better than predicting the training mean
    train = task.get_table("train").df[task.target_col]
    val = task.get_table("val").df[task.target_col]
    assert result.val["mae"] < (val - train.mean()).abs().mean()


def test_mode_errors(synthetic_graph, churn, checkpoint):
    with pytest.raises(RelcoreError, match="needs a pretrained --checkpoint"):
        finetune(synthetic_graph, churn, "customer-churn", FinetuneConfig(mode="PF"))
    for mode in ("B", "R"):
        with pytest.raises(RelcoreError, match=f"mode {mode} starts from a random backbone"):
            finetune(synthetic_graph, churn, "customer-churn", FinetuneConfig(mode=mode), checkpoint=checkpoint)
    with pytest.raises(RelcoreError, match="mode must be one of"):
        FinetuneConfig(mode="X")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "relcore", *args], capture_output=True, text=True, timeout=300)


def test_cli_finetune_json(checkpoint):
    out = cli("finetune", "synthetic", "--task", "customer-churn", "--mode", "PF", "--checkpoint", checkpoint,
              "--max-steps", "10", "--eval-every", "5", "--batch-size", "64", "--fanouts", "8,8", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["task"] == "customer-churn" and res["mode"] == "PF" and res["steps"] == 10
    assert {"roc_auc", "average_precision"} <= set(res["val"]) and "roc_auc" in res["test"]
    assert res["best_step"] in (5, 10) and res["seconds"] > 0


def test_cli_reference_protocol_takes_the_depth_from_the_checkpoint(checkpoint):
    """--protocol reference: lr 5e-3, L1, patience 10, fan-outs halving over the
    checkpoint's 2 layers (not --layers, which is for B), 20 epochs of 971 // 256 = 3
    batches capped by --max-steps, a validation every epoch."""
    out = cli("finetune", "synthetic", "--task", "customer-churn", "--mode", "PF", "--checkpoint", checkpoint,
              "--protocol", "reference", "--layers", "3", "--batch-size", "256", "--max-steps", "30", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    cfg = res["config"]
    assert (cfg["lr"], cfg["fanouts"], cfg["regression_loss"], cfg["patience"]) == (5e-3, [128, 64], "l1", 10)
    assert (cfg["max_steps"], cfg["eval_every"]) == (30, 3)
    assert res["steps"] <= 30 and res["best_step"] % 3 == 0


def test_cli_state_resubmitted_job_continues_and_refuses_another_run(tmp_path):
    """A batch job resubmitted with the same --state continues the saved run (here it had
    finished: the same result, no step run again); another run's state is refused."""
    state = str(tmp_path / "state.pt")
    args = ("finetune", "synthetic", "--task", "customer-churn", "--mode", "B", "--backbone", "linear",
            "--max-steps", "10", "--eval-every", "5", "--batch-size", "64", "--fanouts", "8,8", "--json",
            "--state", state)
    first = cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    again = cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    a, b = (json.loads(o.stdout.strip().splitlines()[-1]) for o in (first, again))
    assert (b["val"], b["test"], b["steps"], b["best_step"]) == (a["val"], a["test"], 10, a["best_step"])
    other = cli(*args, "--seed", "1")
    assert other.returncode != 0
    assert other.stderr.strip().splitlines()[-1].endswith("belongs to another run (it differs in: seed)")


@pytest.mark.parametrize("args,needle", [
    (["--task", "nope", "--mode", "B"], "unknown task 'nope'"),
    (["--task", "customer-churn", "--mode", "P"], "needs a pretrained --checkpoint"),
    (["--task", "customer-churn", "--mode", "PF", "--checkpoint", "/nonexistent/backbone.pt"], "backbone.pt"),
])
def test_cli_finetune_bad_inputs(args, needle):
    out = cli("finetune", "synthetic", *args, "--max-steps", "2")
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("relcore finetune: error:") and needle in last, last


def test_cli_checkpoint_from_another_schema(f1_raw_dir, checkpoint):
    out = cli("finetune", "rel-f1", "--raw-dir", f1_raw_dir, "--task", "driver-dnf", "--mode", "P",
              "--checkpoint", checkpoint, "--max-steps", "2")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "relcore finetune: error:" in out.stderr.strip().splitlines()[-1]


def test_cli_link_task_not_supported(f1_raw_dir):
    out = cli("finetune", "rel-f1", "--raw-dir", f1_raw_dir, "--task", "driver-circuit-compete", "--mode", "B",
              "--max-steps", "2")
    assert out.returncode == 2 and "not supported yet" in out.stderr.strip().splitlines()[-1]


def test_time_batch_order_keeps_whole_timestamps_together(synthetic_graph, churn):
    """--batch-order time: an epoch is a permutation of the training rows in which every
    timestamp's seeds are one contiguous block (blocks and rows within them shuffled, seeded);
    random scatters them. A run in that order trains like any other."""
    from relcore.finetune import SplitTable, epoch_order

    times = SplitTable.of(churn, "train").times
    n_stamps = len(times.unique())
    assert 1 < n_stamps < len(times)  # several seeds per timestamp

    def blocks(order):  # maximal runs of one timestamp along the order
        t = times[order]
        return int((t[1:] != t[:-1]).sum()) + 1

    timed = epoch_order(times, "time", torch.Generator().manual_seed(0))
    assert sorted(timed.tolist()) == list(range(len(times)))
    assert blocks(timed) == n_stamps
    assert torch.equal(timed, epoch_order(times, "time", torch.Generator().manual_seed(0)))
    assert not torch.equal(timed, epoch_order(times, "time", torch.Generator().manual_seed(1)))
    shuffled = epoch_order(times, "random", torch.Generator().manual_seed(0))
    assert torch.equal(shuffled, torch.randperm(len(times), generator=torch.Generator().manual_seed(0)))
    assert blocks(shuffled) > 2 * n_stamps
    result = finetune(synthetic_graph, churn, "customer-churn",
                      FinetuneConfig(batch_order="time", **{**FAST, "max_steps": 10, "eval_every": 5}),
                      BackboneConfig(table_model="linear"))
    assert result.steps == 10 and 0.0 < result.val["roc_auc"] < 1.0
    with pytest.raises(RelcoreError, match="batch order must be one of"):
        FinetuneConfig(batch_order="size")
