"""Top-5 aggregation on hand-made trial tables: selection by validation only."""

from __future__ import annotations

import pandas as pd
import pytest

from sweeps.aggregate import top_k, summary_metrics


def trials(rows, metric="roc_auc", higher=True, task="driver-dnf", regime="B"):
    return pd.DataFrame([{"dataset": "rel-f1", "task": task, "backbone": "resnet", "regime": regime,
                          "key": f"t{i}", "metric": metric, "higher": higher,
                          f"val/{metric}": v, f"test/{metric}": t} for i, (v, t) in enumerate(rows)])


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
    res = top_k(trials(rows, metric="mae", higher=False, task="driver-position"), k=5)
    val = cell(res, "val", "mae")
    assert val["mean"] == pytest.approx((2.0 + 2.5 + 3.0 + 3.5 + 4.0) / 5)  # 5.0 dropped


def test_fewer_than_five_trials():
    res = top_k(trials([(0.6, 0.5), (0.8, 0.7)]))
    assert cell(res, "val")["n"] == 2
    assert cell(res, "test")["mean"] == pytest.approx(0.6)


def test_ties_broken_deterministically_by_key():
    rows = [(0.7, 0.1)] * 6 + [(0.7, 0.9)]  # seven trials tie on validation
    res = top_k(trials(rows))
    # keys t0..t4 win the tie (sorted by key), whatever the test values
    assert cell(res, "test")["mean"] == pytest.approx(0.1)
    assert top_k(trials(rows)).equals(res)


def test_groups_are_separate_and_summary_names():
    df = pd.concat([trials([(0.7, 0.6)], regime="B"), trials([(0.8, 0.75)], regime="PF")])
    res = top_k(df)
    names = summary_metrics(res)
    assert names["driver-dnf.resnet.PF.test.roc_auc_mean"] == pytest.approx(0.75)
    assert names["driver-dnf.resnet.B.val.roc_auc_std"] == 0.0
    assert set(res.columns) == {"dataset", "task", "backbone", "regime", "split", "metric", "mean", "std", "n"}


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


def test_gains_over_b_in_the_results_markdown():
    """results.md adds P − B and P&F − B per (task, backbone), positive = better, with the
    Welch half-width where both cells have 2+ trials, nothing invented for missing cells."""
    from sweeps.report import results_markdown

    rows = []
    for regime, split, mean, std, n in (("B", "val", 0.70, 0.01, 5), ("B", "test", 0.68, 0.01, 5),
                                        ("P", "val", 0.72, 0.01, 5), ("P", "test", 0.69, 0.02, 1)):
        rows.append(("db", "churn", "linear", regime, split, "roc_auc", mean, std, n))
    for regime, mean in (("B", 0.5), ("PF", 0.4)):
        for split in ("val", "test"):
            rows.append(("db", "rating", "resnet", regime, split, "mae", mean, 0.0, 3))
    text = results_markdown(pd.DataFrame(rows, columns=["dataset", "task", "backbone", "regime", "split",
                                                        "metric", "mean", "std", "n"]))
    # churn P - B val: +2.00 points, df 8, se = sqrt(2 * 1.25 / 5) -> 1.63; test: P has 1 trial
    assert "| churn | AUROC | Linear-SAGE | +2.00 ± 1.63 | +1.00 | – | – |" in text
    # MAE 0.5 -> 0.4 is a gain of +0.100; no spread at all gives a zero half-width
    assert "| rating | MAE | ResNet-SAGE | – | – | +0.100 ± 0.000 | +0.100 ± 0.000 |" in text
