"""Top-k aggregation: the paper's "top-5 mean" per (dataset, task, backbone, regime).

Trials are ranked by the task's validation metric only (AUROC higher, MAE lower; ties
broken by trial key so the choice is deterministic); the mean and standard deviation
(population, ddof=0) of the selected trials' validation and test metrics are reported.
Test numbers never influence which trials are selected.
"""

from __future__ import annotations

import math

import pandas as pd

from sweeps.trials import CELL, HOW, check_cells, higher_is_better

GROUP = CELL
COLUMNS = [*GROUP, *HOW, "split", "metric", "mean", "std", "n"]
CONTRASTS = (("PF", "B"), ("P", "B"), ("P", "R"))  # what pretraining adds: over scratch, over random features
CONTRAST_COLUMNS = ["task", "backbone", "contrast", "split", "metric", "diff", "half", "n_a", "n_b"]


def top_k(trials: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """Aggregate fine-tuning trials (``trials.csv``, :mod:`sweeps.trials`) into ``results.csv`` rows.

    Per cell the ``k`` trials with the best ``val`` (the task's selection metric) are kept,
    ties broken by key; every ``val/<m>`` and ``test/<m>`` column is averaged over them.
    A cell never mixes protocols, database cuts or batch orders (:func:`sweeps.trials.check_cells`).
    """
    rows = []
    if trials.empty:
        return pd.DataFrame(columns=COLUMNS)
    check_cells(trials)
    for group, g in trials.groupby(GROUP, sort=True):
        metric = g["metric"].iloc[0]
        g = g.dropna(subset=["val"])
        g = g.sort_values(["val", "key"], ascending=[not higher_is_better(metric), True], kind="mergesort")
        chosen = g.head(k)
        how = {c: g[c].iloc[0] if len(g) else "" for c in HOW}
        for split in ("val", "test"):
            names = sorted(c.split("/", 1)[1] for c in chosen.columns if c.startswith(f"{split}/"))
            for name in names:
                values = chosen[f"{split}/{name}"].dropna().astype(float)
                if values.empty:
                    continue
                rows.append(dict(zip(GROUP, group), **how, split=split, metric=name, mean=values.mean(),
                                 std=values.std(ddof=0), n=len(values)))
    return pd.DataFrame(rows, columns=COLUMNS)


def contrasts(trials: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """P&F − B, P − B and P − R per (task, backbone) and split, over **all** trials of the
    two cells (not only the top k), signed so that positive is better, with the half-width
    of a Welch t interval (NaN under 2 trials a cell)."""
    rows = []
    for (task, backbone), g in trials.groupby(["task", "backbone"], sort=True):
        metric = g["metric"].iloc[0]
        sign = 1.0 if higher_is_better(metric) else -1.0
        for a, b in CONTRASTS:
            for split in ("val", "test"):
                xa, xb = (g.loc[g.regime == r, split].dropna().astype(float) for r in (a, b))
                if xa.empty or xb.empty:
                    continue
                interval = welch_interval((xa.mean(), xa.std(ddof=0), len(xa)),
                                          (xb.mean(), xb.std(ddof=0), len(xb)), level)
                rows.append({"task": task, "backbone": backbone, "contrast": f"{a}-{b}", "split": split,
                             "metric": metric, "diff": sign * (xa.mean() - xb.mean()),
                             "half": math.nan if interval is None else interval[1],
                             "n_a": len(xa), "n_b": len(xb)})
    return pd.DataFrame(rows, columns=CONTRAST_COLUMNS)


def summary_metrics(results: pd.DataFrame) -> dict[str, float]:
    """``{task}.{backbone}.{regime}.{split}.{metric}_mean`` / ``_std`` for the summary run."""
    out = {}
    for r in results.itertuples(index=False):
        base = f"{r.task}.{r.backbone}.{r.regime}.{r.split}.{r.metric}"
        out[f"{base}_mean"] = float(r.mean)
        out[f"{base}_std"] = float(r.std)
    return out


def welch_interval(a: tuple[float, float, int], b: tuple[float, float, int],
                   level: float = 0.95) -> tuple[float, float] | None:
    """The difference of two cells' means and the half-width of its Welch t interval.

    Each cell is ``(mean, std, n)`` as :func:`top_k` reports it (population std). With
    sample variances :math:`s_i^2 = \\sigma_i^2 n_i / (n_i - 1)`:

    .. math::
        \\bar a - \\bar b \\pm t_{(1+\\text{level})/2,\\,\\nu}\\, \\text{se}, \\qquad
        \\text{se}^2 = \\frac{s_a^2}{n_a} + \\frac{s_b^2}{n_b}, \\qquad
        \\nu = \\frac{\\text{se}^4}{\\sum_i (s_i^2 / n_i)^2 / (n_i - 1)}

    ``None`` when a cell has fewer than 2 trials. The top-k trials were chosen by their
    validation metric, so an interval on validation is optimistic; on test it is not.
    """
    from scipy.stats import t

    (ma, sa, na), (mb, sb, nb) = a, b
    if na < 2 or nb < 2:
        return None
    va, vb = sa**2 * na / (na - 1) / na, sb**2 * nb / (nb - 1) / nb  # s_i^2 / n_i
    se2 = va + vb
    if se2 == 0.0:
        return ma - mb, 0.0
    df = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return ma - mb, float(t.ppf((1.0 + level) / 2.0, df)) * se2**0.5


def cell(results: pd.DataFrame, task: str, backbone: str, regime: str, split: str,
         metric: str) -> tuple[float, float, int] | None:
    """``(mean, std, n)`` of one ``results.csv`` cell, or None when the sweep has none."""
    row = results[(results.task == task) & (results.backbone == backbone) & (results.regime == regime)
                  & (results.split == split) & (results.metric == metric)]
    if row.empty:
        return None
    r = row.iloc[0]
    return float(r["mean"]), float(r["std"]), int(r["n"])


def gain_over_b(results: pd.DataFrame, task: str, backbone: str, regime: str, split: str,
                metric: str, higher: bool) -> tuple[float, float | None] | None:
    """``regime`` − B, signed so that positive is better, and its Welch half-width
    (None under 2 trials a cell); None when either cell is missing."""
    ours, base = (cell(results, task, backbone, r, split, metric) for r in (regime, "B"))
    if ours is None or base is None:
        return None
    interval = welch_interval(ours, base)
    sign = 1.0 if higher else -1.0
    return sign * (ours[0] - base[0]), None if interval is None else interval[1]


def overhead_share(busy: float, wall: float, slots: float) -> float:
    """1 - busy / (wall x slots): the share of slot time not spent inside trials. NaN when
    the trials' time exceeds it: then a stop without warning (SIGKILL) lost wall time, as
    in stages run before tracking.StageClock kept it logged."""
    if wall <= 0 or busy > wall * slots:
        return math.nan
    return 1.0 - busy / (wall * slots)
