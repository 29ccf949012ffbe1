"""Tables of the demo report that read the per-query runs: splits by query bucket and kind, paired CIs.

Every table is built from each method's ``eval/per_query.parquet`` (per query: target pairs and hits at each
cut-off, NDCG@k), so a split is the same pair-level metric as the whole run, restricted to its queries.
"""

from __future__ import annotations

import os
from functools import partial

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from crops_ray import buckets as B
from crops_ray import significance

SPLIT_METRICS = (
    ("recall@100_ct", "R@100 CT"),
    ("recall@20_ct", "R@20 CT"),
    ("recall@100_qr", "R@100 QR"),
    ("ndcg@4", "NDCG@4"),
)
RECALL_KS = (10, 20, 50, 100)


def per_query_path(method_dir: str) -> str | None:
    for p in (f"{method_dir}/eval/per_query.parquet", f"{method_dir}/per_query.parquet"):
        if os.path.exists(p):
            return p
    return None


def load_per_query(root: str, methods: list[str]) -> dict[str, pd.DataFrame]:
    out = {}
    for name in methods:
        path = per_query_path(f"{root}/{name}")
        if path:
            out[name] = pq.read_table(path).to_pandas().drop(columns=["top10"], errors="ignore")
    return out


def query_groups(logs: str, queries: list[str]) -> pd.DataFrame:
    """query, bucket (from the training log: works on any logs) and kind (when the world says)."""
    frame = B.query_buckets(logs, queries)
    path = f"{logs}/eval/queries.parquet"
    if os.path.exists(path):
        kinds = pq.read_table(path, columns=["query", "kind"]).to_pandas()
        frame = frame.merge(kinds, on="query", how="left")
    return frame


def ratio(frame: pd.DataFrame, metric: str) -> float:
    """A Table-1 metric over the queries of ``frame`` (pair-level for recall, a mean for NDCG)."""
    if metric.startswith("recall@"):
        k, target = metric[len("recall@") :].split("_")
        hits, pairs = f"hits@{k}_{target}", f"pairs_{target}"
        if hits not in frame or frame[pairs].fillna(0).sum() == 0:
            return float("nan")
        return float(frame[hits].fillna(0).sum() / frame[pairs].fillna(0).sum())
    return float(frame[metric].mean()) if metric in frame else float("nan")


def _scored(frame: pd.DataFrame, metric: str) -> int:
    """How many queries of ``frame`` the metric scores (those with target pairs, or with judgments)."""
    column = f"pairs_{metric.rsplit('_', 1)[1]}" if metric.startswith("recall@") else metric
    return (
        int(frame[column].fillna(0).gt(0).sum())
        if metric.startswith("recall@") and column in frame
        else int(frame[column].notna().sum())
        if column in frame
        else 0
    )


def split_table(
    runs: dict[str, pd.DataFrame], groups: pd.DataFrame, by: str, labels: dict[str, str], metrics=SPLIT_METRICS
) -> str:
    """One markdown table: rows methods, columns (group, metric); the header counts the group's queries."""
    if by not in groups or groups[by].isna().all():
        return ""
    order = [g for g in (B.BUCKETS if by == "bucket" else sorted(groups[by].dropna().unique())) if g in set(groups[by])]
    table: dict[str, dict[str, float]] = {}
    for name, per in runs.items():
        merged = per.merge(groups[["query", by]], on="query", how="left")
        column = table.setdefault(labels.get(name, name), {})
        for g in order:
            part = merged[merged[by] == g]
            for key, label in metrics:
                column[f"{g}: {label} ({_scored(part, key)} q)"] = ratio(part, key)
    frame = pd.DataFrame(table)
    frame.index.name = by
    return frame.to_markdown(floatfmt=".3f")


def recall_curve_table(runs: dict[str, pd.DataFrame], labels: dict[str, str]) -> str:
    rows = []
    for name, per in runs.items():
        row = {"method": labels.get(name, name)}
        for target in ("ct", "qr"):
            for k in RECALL_KS:
                row[f"R@{k} {target.upper()}"] = ratio(per, f"recall@{k}_{target}")
        rows.append(row)
    return pd.DataFrame(rows).set_index("method").to_markdown(floatfmt=".3f")


def compare(
    runs: dict[str, pd.DataFrame], method: str, baselines: list[str], seed: int = 0, resamples: int = 2000
) -> dict[str, dict]:
    """``method`` vs each baseline: per metric, the paired bootstrap CI of the difference over queries."""
    if method not in runs:
        return {}
    return {
        b: significance.compare_runs(runs[method], runs[b], resamples=resamples, seed=seed)
        for b in baselines
        if b in runs and b != method
    }


def interval_cell(c: dict) -> str:
    """One interval (Interval.as_dict) in points: ``+1.2 [+0.3, +2.0]*``, * when it excludes 0."""
    mark = "*" if c["significant"] else ""
    return f"{100 * c['diff']:+.1f} [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]{mark}"


def seeds_cell(intervals: list[dict]) -> str:
    """One interval per seed, joined; with several seeds the mean ± sd of their differences first."""
    diffs = [c["diff"] for c in intervals]
    lead = f"{100 * np.mean(diffs):+.1f} ± {100 * np.std(diffs, ddof=1):.1f} | " if len(diffs) > 1 else ""
    return lead + "; ".join(interval_cell(c) for c in intervals)


def significance_markdown(per_seed: dict[int, dict[str, dict]], method_label: str, labels: dict[str, str]) -> str:
    """Rows: baselines; columns: each metric's difference (points) with its 95% CI per seed, and the mean."""
    seeds = sorted(per_seed)
    baselines = list(dict.fromkeys(b for s in seeds for b in per_seed[s]))
    rows = []
    for b in baselines:
        row = {f"{method_label} minus": labels.get(b, b)}
        for metric, _ in significance.METRICS.items():
            row[metric] = seeds_cell([per_seed[s][b][metric] for s in seeds if metric in per_seed[s].get(b, {})])
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False)


# ---------------------------------------------------------------------------------------------- additivity

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
    return frame.to_markdown(), {str(s): per_seed[s] for s in seeds}
