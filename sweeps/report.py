"""Sweep reports: ``results.csv``, ``results.md`` (the paper's Table 3 layout) and plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: clusters and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sweeps import aggregate  # noqa: E402

REGIME_ORDER = ["B", "P", "PF", "R"]
REGIME_LABEL = {"B": "B", "P": "P", "PF": "P&F", "R": "R"}  # R: random backbone, frozen
BACKBONE_LABEL = {"linear": "Linear-SAGE", "resnet": "ResNet-SAGE"}


def selection_metric(results: pd.DataFrame, task: str) -> str:
    names = set(results.loc[results.task == task, "metric"])
    return "roc_auc" if "roc_auc" in names else "mae"


def metric_units(metric: str) -> tuple[str, float, int]:
    """(label, scale, decimals) a metric is printed with: AUROC in percent, as the paper does."""
    return ("AUROC", 100.0, 2) if metric == "roc_auc" else ("MAE", 1.0, 3)


def results_markdown(results: pd.DataFrame, trials: pd.DataFrame | None = None) -> str:
    """One row per (task, backbone), one column per regime, cells "val / test" (mean ± std);
    then, given the trials behind it, :func:`contrasts_markdown`."""
    regimes = [r for r in REGIME_ORDER if r in set(results.regime)] or REGIME_ORDER[:3]
    lines = ["| task | metric | backbone | " + " | ".join(REGIME_LABEL[r] for r in regimes) + " |",
             "|---|---|---|" + "---|" * len(regimes)]
    for task in sorted(results.task.unique()):
        metric = selection_metric(results, task)
        label, scale, digits = metric_units(metric)
        fmt = f"{{:.{digits}f}}"
        sub = results[(results.task == task) & (results.metric == metric)]
        for backbone in sorted(sub.backbone.unique()):
            cells = []
            for regime in regimes:
                parts = []
                for split in ("val", "test"):
                    r = sub[(sub.backbone == backbone) & (sub.regime == regime) & (sub.split == split)]
                    parts.append("–" if r.empty else
                                 f"{fmt.format(r['mean'].iloc[0] * scale)} ± {fmt.format(r['std'].iloc[0] * scale)}")
                n = sub[(sub.backbone == backbone) & (sub.regime == regime)]["n"]
                cells.append(" / ".join(parts) + (f" (n={int(n.iloc[0])})" if not n.empty else ""))
            lines.append(f"| {task} | {label} | {BACKBONE_LABEL.get(backbone, backbone)} | "
                         + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Top-5 trials by validation metric; cells are val / test, mean ± std (ddof=0)"
                 + _how(results) + ".")
    text = "\n".join(lines) + "\n"
    if trials is not None and not trials.empty:
        text += "\n" + contrasts_markdown(aggregate.contrasts(trials))
    return text


def _how(results: pd.DataFrame) -> str:
    """Protocol, database cut and batch order the table was measured with, when its rows say."""
    parts = []
    for col, name in (("protocol", "protocol"), ("db_cut", "database cut"), ("batch_order", "batch order")):
        if col in results and results[col].notna().any():
            parts.append(f"{name} {', '.join(sorted(set(results[col].dropna().astype(str))))}")
    return "; " + "; ".join(parts) if parts else ""


def contrasts_markdown(contrasts: pd.DataFrame) -> str:
    """Per (task, backbone): P&F − B, P − B and P − R on val and test, positive = better,
    ± the 95 % Welch half-width over all trials of the two cells."""
    names = [f"{a}-{b}" for a, b in aggregate.CONTRASTS]
    label_of = {f"{a}-{b}": f"{REGIME_LABEL[a]} − {REGIME_LABEL[b]}" for a, b in aggregate.CONTRASTS}
    lines = ["| task | metric | backbone | " + " | ".join(f"{label_of[c]} {s}" for c in names for s in ("val", "test"))
             + " |", "|---|---|---|" + "---|" * (2 * len(names))]
    for (task, backbone), g in contrasts.groupby(["task", "backbone"], sort=True):
        label, scale, digits = metric_units(g["metric"].iloc[0])
        cells = []
        for c in names:
            for split in ("val", "test"):
                r = g[(g.contrast == c) & (g.split == split)]
                if r.empty:
                    cells.append("–")
                    continue
                r = r.iloc[0]
                half = "" if pd.isna(r["half"]) else f" ± {r['half'] * scale:.{digits}f}"
                cells.append(f"{r['diff'] * scale:+.{digits}f}{half}")
        lines.append(f"| {task} | {label} | {BACKBONE_LABEL.get(backbone, backbone)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Differences of means, positive = better (AUROC in points, MAE in its units), over all "
                 "trials of each cell; ± is the half-width of a 95 % Welch t interval.")
    return "\n".join(lines) + "\n"


def plot_regimes(results: pd.DataFrame, path: Path) -> None:
    """Bars of B / P / P&F test metric per task and backbone, with std error bars."""
    tasks = sorted(results.task.unique())
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.5 * max(1, len(tasks)), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        metric = selection_metric(results, task)
        sub = results[(results.task == task) & (results.metric == metric) & (results.split == "test")]
        backbones = sorted(sub.backbone.unique())
        width = 0.8 / max(1, len(REGIME_ORDER))
        lows, highs = [], []
        for i, regime in enumerate(REGIME_ORDER):
            xs, ys, es = [], [], []
            for j, bb in enumerate(backbones):
                r = sub[(sub.backbone == bb) & (sub.regime == regime)]
                if not r.empty:
                    xs.append(j + i * width)
                    ys.append(r["mean"].iloc[0])
                    es.append(r["std"].iloc[0])
            ax.bar(xs, ys, width, yerr=es, capsize=3, label=REGIME_LABEL[regime])
            lows += [y - e for y, e in zip(ys, es)]
            highs += [y + e for y, e in zip(ys, es)]
        if lows:  # zoom on the bars: regimes often differ by a few points only
            pad = 0.25 * (max(highs) - min(lows)) + 1e-3
            ax.set_ylim(max(0.0, min(lows) - pad), max(highs) + pad)
        ax.set_xticks([j + width for j in range(len(backbones))])
        ax.set_xticklabels([BACKBONE_LABEL.get(b, b) for b in backbones])
        ax.set_title(f"{task} (test {metric})")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pretrain_curves(curves: dict[str, pd.DataFrame], path: Path) -> None:
    """Validation loss (Eq. 6, normalised) against step for every pretraining trial."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for key, df in sorted(curves.items()):
        if "val/loss" in df and "step" in df:
            d = df.dropna(subset=["val/loss"])
            ax.plot(d["step"], d["val/loss"], label=key, linewidth=1)
    ax.axhline(3.0, color="grey", linestyle=":", linewidth=1)  # three terms, each 1.0 at chance
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (Eq. 6)")
    ax.set_title("pretraining")
    if curves:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cumulative_time(times: pd.DataFrame, path: Path) -> None:
    """Cumulative training time (hours) per stage and task, trials in completion order."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for (stage, task), g in times.groupby(["stage", "task"], sort=True):
        g = g.sort_values("end_time")
        label = stage if stage == "pretrain" else f"{stage}: {task}"
        ax.plot(range(1, len(g) + 1), g["busy_s"].cumsum() / 3600.0, marker=".", label=label)
    ax.set_xlabel("trials finished")
    ax.set_ylabel("cumulative training time (h)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(trials: pd.DataFrame, curves: dict[str, pd.DataFrame], times: pd.DataFrame,
                  out_dir: Path) -> list[Path]:
    """Write every report file into ``out_dir``; return their paths. ``results.csv`` is
    :func:`sweeps.aggregate.top_k` of ``trials.csv``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "trials.csv", out_dir / "results.csv", out_dir / "results.md", out_dir / "regimes.png",
             out_dir / "pretrain_loss.png", out_dir / "training_time.png"]
    results = aggregate.top_k(trials)
    trials.to_csv(paths[0], index=False)
    results.to_csv(paths[1], index=False)
    paths[2].write_text(results_markdown(results, trials))
    plot_regimes(results, paths[3])
    plot_pretrain_curves(curves, paths[4])
    plot_cumulative_time(times, paths[5])
    return paths
