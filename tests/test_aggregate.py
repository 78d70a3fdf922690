"""Top-5 aggregation on hand-made trial tables: selection by validation only."""

from __future__ import annotations

import pandas as pd
import pytest

from sweeps.aggregate import top_k, summary_metrics


def trials(rows, metric="roc_auc", task="driver-dnf", regime="B"):
    """A trials.csv table (sweeps.trials) with one row per (val, test) pair."""
    return pd.DataFrame([{"dataset": "rel-f1", "task": task, "backbone": "resnet", "regime": regime,
                          "protocol": "paper", "db_cut": "test", "batch_order": "random", "key": f"{regime}{i}", "metric": metric,
                          "val": v, "test": t, f"val/{metric}": v, f"test/{metric}": t}
                         for i, (v, t) in enumerate(rows)])


def cell(res, split, metric="roc_auc"):
    r = res[(res.split == split) & (res.metric == metric)]
    assert len(r) == 1
    return r.iloc[0]


def test_top5_by_validation_never_test():
    # trial 6 has the best test score but the worst validation score: it must not be chosen
    rows = [(0.70, 0.60), (0.71, 0.61), (0.72, 0.62), (0.73, 0.63), (0.74, 0.64), (0.75, 0.65), (0.10, 0.99)]
    res = top_k(trials(rows))
    val, test = cell(res, "val"), cell(res, "test")
    assert val["n"] == 5 and test["n"] == 5
    assert val["mean"] == pytest.approx((0.71 + 0.72 + 0.73 + 0.74 + 0.75) / 5)
    assert test["mean"] == pytest.approx((0.61 + 0.62 + 0.63 + 0.64 + 0.65) / 5)
    assert test["std"] == pytest.approx(pd.Series([0.61, 0.62, 0.63, 0.64, 0.65]).std(ddof=0))


def test_lower_is_better_metric():
    rows = [(3.0, 3.5), (4.0, 1.0), (2.0, 3.1), (5.0, 0.5), (2.5, 3.3), (3.5, 3.6)]
    res = top_k(trials(rows, metric="mae", task="driver-position"), k=5)
    val = cell(res, "val", "mae")
    assert val["mean"] == pytest.approx((2.0 + 2.5 + 3.0 + 3.5 + 4.0) / 5)  # 5.0 dropped


def test_fewer_than_five_trials():
    res = top_k(trials([(0.6, 0.5), (0.8, 0.7)]))
    assert cell(res, "val")["n"] == 2
    assert cell(res, "test")["mean"] == pytest.approx(0.6)


def test_ties_broken_deterministically_by_key():
    rows = [(0.7, 0.1)] * 6 + [(0.7, 0.9)]  # seven trials tie on validation
    res = top_k(trials(rows))
    # keys B0..B4 win the tie (sorted by key), whatever the test values
    assert cell(res, "test")["mean"] == pytest.approx(0.1)
    assert top_k(trials(rows)).equals(res)


def test_groups_are_separate_and_summary_names():
    df = pd.concat([trials([(0.7, 0.6)], regime="B"), trials([(0.8, 0.75)], regime="PF")])
    res = top_k(df)
    names = summary_metrics(res)
    assert names["driver-dnf.resnet.PF.test.roc_auc_mean"] == pytest.approx(0.75)
    assert names["driver-dnf.resnet.B.val.roc_auc_std"] == 0.0
    assert set(res.columns) == {"dataset", "task", "backbone", "regime", "protocol", "db_cut", "batch_order",
                                "split", "metric", "mean", "std", "n"}
    assert set(res.protocol) == {"paper"} and set(res.db_cut) == {"test"}


def test_empty():
    assert top_k(pd.DataFrame()).empty


def test_welch_interval_matches_scipys_welch_test():
    """The interval's end is where scipy's Welch t-test (from sample stds) gives p = 0.05."""
    from scipy.stats import ttest_ind_from_stats

    from sweeps.aggregate import welch_interval

    a, b = (0.74, 0.012, 5), (0.71, 0.030, 3)  # population stds, as results.csv has them
    diff, half = welch_interval(a, b)
    assert diff == pytest.approx(0.03)
    sample = lambda s, n: s * (n / (n - 1)) ** 0.5  # noqa: E731
    # a mean difference of exactly the half-width is at the test's 5 % level
    at_edge = ttest_ind_from_stats(b[0] + half, sample(a[1], a[2]), a[2], b[0], sample(b[1], b[2]), b[2],
                                   equal_var=False)
    assert at_edge.pvalue == pytest.approx(0.05, abs=1e-9)
    inside = ttest_ind_from_stats(a[0], sample(a[1], a[2]), a[2], b[0], sample(b[1], b[2]), b[2], equal_var=False)
    assert (inside.pvalue < 0.05) == (abs(diff) > half)
    assert welch_interval(a, (0.71, 0.0, 1)) is None  # one trial: no interval
    assert welch_interval((1.0, 0.0, 3), (0.5, 0.0, 3)) == (0.5, 0.0)


def test_contrasts_over_all_trials_in_the_results_markdown():
    """results.md adds P&F − B, P − B and P − R per (task, backbone), positive = better, over
    every trial of the two cells (not the top 5), with the Welch half-width scipy's Welch
    test gives, and nothing invented for a missing cell or a one-trial cell."""
    from scipy.stats import ttest_ind

    from sweeps.aggregate import top_k
    from sweeps.report import results_markdown

    b = [(0.68, 0.60), (0.69, 0.61), (0.70, 0.62), (0.71, 0.63), (0.72, 0.64), (0.50, 0.90)]
    p = [(0.70, 0.60), (0.71, 0.62), (0.72, 0.61), (0.73, 0.66), (0.74, 0.65), (0.75, 0.58)]
    table = pd.concat([trials(b, task="churn"), trials(p, task="churn", regime="P"),
                       trials([(0.9, 0.9)], task="churn", regime="PF"),
                       trials([(0.5, 0.5), (0.4, 0.6)], metric="mae", task="rating", regime="B"),
                       trials([(0.4, 0.4), (0.3, 0.5)], metric="mae", task="rating", regime="R"),
                       trials([(0.3, 0.4), (0.2, 0.5)], metric="mae", task="rating", regime="P")])
    text = results_markdown(top_k(table), table)
    cells = {}
    for split, col in (("val", 0), ("test", 1)):
        xs, ys = [v[col] for v in p], [v[col] for v in b]
        ci = ttest_ind(xs, ys, equal_var=False).confidence_interval(0.95)
        cells[split] = f"{100 * (sum(xs) / 6 - sum(ys) / 6):+.2f} ± {100 * (ci.high - ci.low) / 2:.2f}"
    # churn: P&F has one trial (no interval), there is no R (no P − R)
    assert f"| churn | AUROC | Linear-SAGE | " not in text  # resnet rows only
    assert (f"| churn | AUROC | ResNet-SAGE | +{100 * (0.9 - sum(v[0] for v in b) / 6):.2f} | "
            f"+{100 * (0.9 - sum(v[1] for v in b) / 6):.2f} | {cells['val']} | {cells['test']} | – | – |") in text
    # MAE: lower is better, so 0.45 -> 0.25 is a gain of +0.200; P − R val +0.100
    assert "| rating | MAE | ResNet-SAGE | – | – | +0.200 ± " in text
    assert "| +0.100 ± " in text.split("| rating |")[-1]
    # the top-5 table has the R column, and says how it was measured
    assert "| B | P | P&F | R |" in text and "protocol paper; database cut test; batch order random." in text


def test_trial_row_of_a_trial_ended_after_an_evaluation():
    """A trial ended from outside after an evaluation (no closing summary) still gives its
    row: metric, steps and seconds from the evaluation's own keys."""
    from relcore.data import DatasetSpec
    from relcore.finetune import FinetuneConfig
    from relcore.models import BackboneConfig
    from sweeps.space import FinetuneTrial
    from sweeps.trials import TrialRow

    trial = FinetuneTrial("driver-dnf-P-linear-L2-sum-c0.4-s0", DatasetSpec("rel-f1", db_cut="full"), "driver-dnf",
                          "P", BackboneConfig(), FinetuneConfig(mode="P", seed=3), "reference",
                          checkpoint="/c", pretrain_key="linear-L2-sum-c0.4-s0", corruption=0.4)
    evaluation = {"step": 242, "time_total_s": 322.5, "best/val/roc_auc": 0.70, "best/test/roc_auc": 0.75,
                  "val/roc_auc": 0.69, "best/val/accuracy": 0.8}
    row = TrialRow.from_result(trial, evaluation, stop_reason="early_stopping (patience 10)")
    assert (row.metric, row.val, row.test, row.steps, row.seconds) == ("roc_auc", 0.70, 0.75, 242, 322.5)
    assert (row.seed, row.corruption, row.db_cut, row.protocol) == (3, 0.4, "full", "reference")
    assert row.metrics == {"val/roc_auc": 0.70, "test/roc_auc": 0.75, "val/accuracy": 0.8}


def test_batch_order_is_part_of_how_a_cell_was_measured(tmp_path):
    """A trials.csv from before the column reads as random (the only order then); a cell
    that mixes orders is refused in one line."""
    from relcore.errors import RelcoreError
    from sweeps.trials import COLUMNS, read

    table = trials([(0.7, 0.7), (0.8, 0.8)])
    for c in COLUMNS:
        if c not in table:
            table[c] = 0
    table.drop(columns="batch_order").to_csv(tmp_path / "old.csv", index=False)
    old = read(tmp_path / "old.csv")
    assert set(COLUMNS) <= set(old.columns) and set(old.batch_order) == {"random"}
    assert set(top_k(old).batch_order) == {"random"}
    mixed = old.assign(batch_order=["random", "time"])
    with pytest.raises(RelcoreError, match="mixes batch_orders random and time"):
        top_k(mixed)
