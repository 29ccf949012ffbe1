"""The reports' charts (matplotlib, Agg): Table 1 as bars; :func:`pyplot` for every chart (the sweep's is in
:mod:`crops_ray.report.sweep`, the filter bubble's in :mod:`crops_ray.world.bubble`)."""

from __future__ import annotations

import numpy as np

from crops_ray.report.tables import TABLE1_COLUMNS


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_table1(summary: dict[str, dict[str, float]], methods: list[str], path: str, labels: dict[str, str]) -> None:
    """Table 1's metrics per method (mean over seeds, one standard deviation as the error bar) into ``path``."""
    plt = pyplot()
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
