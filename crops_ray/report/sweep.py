"""The alpha sweep's report (:mod:`crops_ray.alpha_sweep` computes the rows): per alpha the kept counts and their
quality, CroPS's metrics with the paired CI of their difference from the build's alpha, a summary in a few lines,
and OUT/alpha_sweep.{json,md,png}."""

from __future__ import annotations

import json
import os

import numpy as np

from crops_ray.report.markdown import rows_table
from crops_ray.report.per_query import interval_cell
from crops_ray.report.plots import pyplot

DOWNSTREAM_METRICS = (("recall@100_ct", "R@100 CT"), ("recall@100_qr", "R@100 QR"), ("ndcg@4", "NDCG@4"))


def _alpha_label(alpha: float, reference: float) -> str:
    return f"{alpha:g}" + (" (build)" if alpha == reference else "")


def _cell(value) -> str:
    """A share as text, "-" when it is undefined (nothing kept, nothing relevant)."""
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def mining_table(rows: list[dict], reference: float) -> str:
    """Markdown: per alpha, kept of candidates per source, the precision the logs estimate for them, and
    precision/recall where there is ground truth."""
    table = []
    for r in rows:
        line = {
            "alpha": _alpha_label(r["alpha"], reference),
            "P1 kept": f"{r['p1_kept']:,} / {r['p1_candidates']:,}",
            "P2 kept": f"{r['p2_kept']:,} / {r['p2_candidates']:,}",
        }
        for name, label in (("p1", "P1"), ("p2", "P2"), ("mined", "mined")):
            if f"{name}_estimated_precision" in r:  # from the logs alone: the kept pairs' mean theta
                line[f"{label} est. precision (logs)"] = _cell(r[f"{name}_estimated_precision"])
            if f"{name}_precision" in r:
                line[f"{label} precision"] = _cell(r[f"{name}_precision"])
                line[f"{label} recall"] = _cell(r[f"{name}_recall"])
        if "mined_f1" in r:
            line["mined F1"] = _cell(r["mined_f1"])
        line["samples"] = f"{r['samples']:,}"
        table.append(line)
    return rows_table(table, text=True)


def downstream_table(rows: list[dict], reference: float) -> str:
    """Markdown: per alpha, CroPS's metrics (percent) and the paired 95% CI of its difference from the reference."""
    table = []
    for r in rows:
        if not any(key in r for key, _ in DOWNSTREAM_METRICS):
            continue
        line = {"alpha": _alpha_label(r["alpha"], reference)}
        for key, label in DOWNSTREAM_METRICS:
            value, ci = r.get(key), r.get(f"{key}_vs_reference")
            line[label] = "-" if value is None else f"{100 * value:.1f}"
            if ci is not None:
                line[label] += f" ({interval_cell(ci)})"
        table.append(line)
    return rows_table(table, text=True) if table else ""


def summary_lines(rows: list[dict], reference: float) -> list[str]:
    """What a reader wants from the sweep in a few lines: the spread of kept counts, where the mined positives'
    F1 peaks (ground truth), and per downstream metric the best alpha and how flat the curve is."""
    lines = []
    for short, label in (("p1", "P1"), ("p2", "P2")):
        kept = [r[f"{short}_kept"] for r in rows]
        lines.append(
            f"{label} kept {max(kept):,} at alpha {rows[0]['alpha']:g} down to {min(kept):,} at "
            f"{rows[-1]['alpha']:g} (of {rows[0][f'{short}_candidates']:,} candidates)"
        )
    scored = [r for r in rows if r.get("mined_f1") is not None]
    if scored:
        best = max(scored, key=lambda r: r["mined_f1"])
        lines.append(
            f"mined positives' F1 against the ground truth peaks at alpha {best['alpha']:g}: precision "
            f"{best['mined_precision']}, recall {best['mined_recall']}, F1 {best['mined_f1']}"
        )
    for key, label in DOWNSTREAM_METRICS:
        values = [(r["alpha"], r[key]) for r in rows if r.get(key) is not None]
        if not values:
            continue
        best = max(values, key=lambda v: v[1])
        spread = 100 * (max(v for _, v in values) - min(v for _, v in values))
        apart = [f"{r['alpha']:g}" for r in rows if r.get(f"{key}_vs_reference", {}).get("significant")]
        lines.append(
            f"{label}: best at alpha {best[0]:g} ({100 * best[1]:.1f}); spread over alphas {spread:.1f} "
            f"points; alphas whose paired CI vs {reference:g} excludes 0: {', '.join(apart) or 'none'}"
        )
    return lines


def write_outputs(result: dict, out: str) -> None:
    """OUT/alpha_sweep.json, OUT/alpha_sweep.md (the tables and the summary) and OUT/alpha_sweep.png."""
    rows, reference = result["rows"], result["build_alpha"]
    os.makedirs(out, exist_ok=True)
    with open(f"{out}/alpha_sweep.json", "w") as f:
        json.dump(result, f, indent=2, default=str)
    truth = (
        f"relevant = {result['relevant_means']} in {result['ground_truth']}"
        if result["ground_truth"]
        else "no ground truth: counts only"
    )
    parts = [
        f"# Alpha sweep of {result['data']}",
        "",
        (
            f"The discriminator's scores from the build (alpha {reference:g}) thresholded again at each alpha; "
            f"nothing re-scored. P3 held as built. {truth}."
        ),
        "",
        mining_table(rows, reference),
    ]
    table = downstream_table(rows, reference)
    if table:
        parts += [
            "",
            f"## CroPS per alpha (seed {result['downstream']['seed']})",
            "",
            (
                f"Percent; in brackets the difference from alpha {reference:g} in points with its paired bootstrap "
                "95% CI over queries (* excludes 0)."
            ),
            "",
            table,
        ]
    parts += [
        "",
        "## Summary",
        "",
        *[f"- {line}" for line in result["summary"]],
        "",
        "![alpha sweep](alpha_sweep.png)",
        "",
    ]
    with open(f"{out}/alpha_sweep.md", "w") as f:
        f.write("\n".join(parts))
    plot_sweep(rows, f"{out}/alpha_sweep.png", reference)


def plot_sweep(rows: list[dict], path: str, reference: float) -> None:
    """Kept counts, precision/recall (with ground truth) and downstream metrics (when trained) against alpha."""
    plt = pyplot()
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
