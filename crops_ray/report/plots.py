"""The reports' charts (matplotlib, Agg): Table 1 as bars, and the alpha sweep against alpha."""

from __future__ import annotations

import numpy as np

from crops_ray.report.sweep import DOWNSTREAM_METRICS
from crops_ray.report.tables import TABLE1_COLUMNS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_table1(summary: dict[str, dict[str, float]], methods: list[str], path: str, labels: dict[str, str]) -> None:
    """Table 1's metrics per method (mean over seeds, one standard deviation as the error bar) into ``path``."""
    plt = _pyplot()
    names = [m for m in methods if m in summary]
    x = np.arange(len(TABLE1_COLUMNS))
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, name in enumerate(names):
        vals = [100 * summary[name].get(k, float("nan")) for k, _ in TABLE1_COLUMNS]
        errs = [100 * summary[name].get(k + "_std", 0.0) for k, _ in TABLE1_COLUMNS]
        label = labels.get(name, name)
        ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, yerr=errs, label=label, capsize=2)
    ax.set_xticks(x, [c[1] for c in TABLE1_COLUMNS])
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title("Table 1 on these logs (mean over seeds; bars: one standard deviation)")
    ax.legend(fontsize=7, ncol=3, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(rows: list[dict], path: str, reference: float) -> None:
    """Kept counts, precision/recall (with ground truth) and downstream metrics (when trained) against alpha."""
    plt = _pyplot()
    alphas = [r["alpha"] for r in rows]
    trained = any(key in r for r in rows for key, _ in DOWNSTREAM_METRICS)
    panels = ["counts"] + (["quality"] if "p1_precision" in rows[0] else []) + (["downstream"] if trained else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "counts":
            for short, label in (("p1", "P1 kept"), ("p2", "P2 kept")):
                ax.plot(alphas, [r[f"{short}_kept"] for r in rows], marker="o", label=label)
            ax.set_ylabel("pairs kept")
            ax.set_title("kept candidates")
        elif panel == "quality":
            for color, (name, label) in zip(("C0", "C1", "C2"), (("p1", "P1"), ("p2", "P2"), ("mined", "mined"))):
                for what, style, marker in (("precision", "-", "o"), ("recall", "--", "x")):
                    values = [np.nan if r[f"{name}_{what}"] is None else r[f"{name}_{what}"] for r in rows]
                    ax.plot(alphas, values, color=color, linestyle=style, marker=marker, label=f"{label} {what}")
            ax.set_ylim(0, 1.02)
            ax.set_title("against the ground truth (grade >= 2)")
        else:
            for key, label in DOWNSTREAM_METRICS:
                values = [100 * r[key] if r.get(key) is not None else np.nan for r in rows]
                ax.plot(alphas, values, marker="o", label=label)
            ax.set_ylabel("%")
            ax.set_title("CroPS trained on each alpha's samples")
        ax.axvline(reference, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("alpha (keep theta > alpha)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
