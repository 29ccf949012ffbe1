"""Do the perspectives' gains add up? The ablation's paired bootstrap CIs and their table in the demo report."""

from __future__ import annotations

from functools import partial

import pandas as pd

from crops_ray import significance
from crops_ray.report.markdown import markdown_table
from crops_ray.report.per_query import seeds_cell

# The ablation's methods (crops_ray.experiment): P0 alone with HLA + H-InfoNCE (FS-LR-style trains on the log stages
# only, with H-InfoNCE), P0 plus one perspective, all of them, and all of them with binary labels and InfoNCE.
ADDITIVITY_BASE = "fs_lr"
ADDITIVITY_PARTS = {"crops_p1": "P1", "crops_p2": "P2", "crops_p3": "P3"}
ADDITIVITY_WHOLE = "crops"
ADDITIVITY_BINARY = "crops_binary"


def _aligned(runs: dict[str, pd.DataFrame], names: list[str], num: str, den: str | None) -> pd.DataFrame | None:
    """Per query, the numerator of each run in ``names`` (a column per run) and the shared denominator, on the
    queries every run scored (as :func:`significance.compare_runs` keeps them); None when a run lacks the metric."""
    if any(num not in runs[n].columns for n in names):
        return None
    first = runs[names[0]]
    frame = first[["query"] + ([den] if den else [])]
    for n in names:
        frame = frame.merge(runs[n][["query", num]].rename(columns={num: n}), on="query")
    frame = frame.dropna()
    return frame[frame[den] > 0] if den else frame


def _interval(a, b, den, resamples: int, seed: int) -> dict:
    return significance.paired_bootstrap(a, b, den, resamples=resamples, seed=seed).as_dict()


def _verdict(c: dict) -> str:
    return "additive" if not c["significant"] else ("super-additive" if c["ci_low"] > 0 else "sub-additive")


def additivity(
    runs: dict[str, pd.DataFrame],
    seed: int = 0,
    resamples: int = 2000,
    base: str = ADDITIVITY_BASE,
    parts=tuple(ADDITIVITY_PARTS),
    whole: str = ADDITIVITY_WHOLE,
    binary: str = ADDITIVITY_BINARY,
) -> dict:
    """Do the perspectives' gains add up? One seed's per-query runs -> per metric, paired bootstrap CIs of:

    - each perspective's gain over P0 (``part - base``) and the gain of all of them (``whole - base``);
    - the interaction ``(whole - base) - sum_k (part_k - base)``, bootstrapped as one statistic with the same
      resampled queries for all runs, since the sum of separately bootstrapped gains has no interval. Every
      metric is a ratio of per-query sums with a denominator the runs share, so the interaction is exactly
      ``paired_bootstrap(whole + (k - 1) * base, sum_k part_k, den)``. "additive" when its CI holds 0;
    - HLA + H-InfoNCE against binary labels + InfoNCE on the same samples (``whole - binary``).

    Returns {} without the base, the whole or any part. JSON-ready (metrics.json's "additivity").
    """
    present = [p for p in parts if p in runs]
    if base not in runs or whole not in runs or not present:
        return {}
    k = len(present)
    out: dict = {"base": base, "parts": present, "whole": whole, "metrics": {}}
    for metric, (num, den) in significance.METRICS.items():
        frame = _aligned(runs, [base, whole, *present], num, den)
        if frame is None or len(frame) < 2:
            continue
        ci = partial(_interval, den=frame[den] if den else None, resamples=resamples, seed=seed)
        gains = {p: ci(frame[p], frame[base]) for p in present}
        interaction = ci(frame[whole] + (k - 1) * frame[base], sum(frame[p] for p in present))
        interaction["verdict"] = _verdict(interaction)
        out["metrics"][metric] = {
            "gains": gains,
            "sum_of_gains": float(sum(g["diff"] for g in gains.values())),
            "whole": ci(frame[whole], frame[base]),
            "interaction": interaction,
        }
    if binary in runs:
        out["binary"] = binary
        for metric, c in significance.compare_runs(runs[whole], runs[binary], resamples=resamples, seed=seed).items():
            out["metrics"].setdefault(metric, {})["labels_vs_binary"] = c
    return out


def additivity_report(per_seed: dict[int, dict], labels: dict[str, str]) -> tuple[str, dict]:
    """(markdown table, metrics.json's "additivity") from :func:`additivity` per seed; ("", {}) without any.

    Rows: each perspective's gain over P0, their sum (a point: no interval, see the interaction), the gain of all
    perspectives, the interaction with its verdict, and HLA + H-InfoNCE minus binary + InfoNCE; columns: the
    metrics, in points with the paired 95% CI per seed (* excludes 0).
    """
    seeds = [s for s in sorted(per_seed) if per_seed[s]]
    if not seeds:
        return "", {}
    first = per_seed[seeds[0]]
    base, whole = labels.get(first["base"], first["base"]), labels.get(first["whole"], first["whole"])
    names = [f"P0 + {ADDITIVITY_PARTS.get(p, p)} minus P0: {labels.get(p, p)} minus {base}" for p in first["parts"]]
    rows: dict[str, dict[str, str]] = {}
    for metric in significance.METRICS:
        entries = [per_seed[s]["metrics"].get(metric, {}) for s in seeds]
        if not any("gains" in e for e in entries):
            continue
        for p, name in zip(first["parts"], names):
            rows.setdefault(name, {})[metric] = seeds_cell([e["gains"][p] for e in entries if p in e.get("gains", {})])
        sums = [e["sum_of_gains"] for e in entries if "sum_of_gains" in e]
        rows.setdefault("sum of the perspectives' gains", {})[metric] = "; ".join(f"{100 * v:+.1f}" for v in sums)
        everything = [e["whole"] for e in entries if "whole" in e]
        rows.setdefault(f"P0 + all minus P0: {whole} minus {base}", {})[metric] = seeds_cell(everything)
        inter = [e["interaction"] for e in entries if "interaction" in e]
        rows.setdefault("interaction: all minus the sum (CI holds 0: additive)", {})[metric] = (
            seeds_cell(inter) + " " + ", ".join(c["verdict"] for c in inter)
        )
        binary = [e["labels_vs_binary"] for e in entries if "labels_vs_binary" in e]
        if binary:
            name = first.get("binary", ADDITIVITY_BINARY)
            row = f"HLA + H-InfoNCE minus binary labels + InfoNCE: {whole} minus {labels.get(name, name)}"
            rows.setdefault(row, {})[metric] = seeds_cell(binary)
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "points (paired 95% CI)"
    return markdown_table(frame), {str(s): per_seed[s] for s in seeds}
