"""Tables of the demo report that read the per-query runs: splits by query bucket and kind, paired CIs.

Every table is built from each method's ``eval/per_query.parquet`` (per query: target pairs and hits at each
cut-off, NDCG@k), so a split is the same pair-level metric as the whole run, restricted to its queries.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from crops_ray import buckets as B
from crops_ray import significance
from crops_ray.layout import LogsLayout, MethodLayout, SeedLayout
from crops_ray.report.markdown import markdown_table, rows_table

SPLIT_METRICS = (
    ("recall@100_ct", "R@100 CT"),
    ("recall@20_ct", "R@20 CT"),
    ("recall@100_qr", "R@100 QR"),
    ("ndcg@4", "NDCG@4"),
)
RECALL_KS = (10, 20, 50, 100)


def per_query_path(method_dir: str) -> str | None:
    for p in (e.per_query for e in MethodLayout(method_dir).evaluations):
        if os.path.exists(p):
            return p
    return None


def load_per_query(root: str, methods: list[str]) -> dict[str, pd.DataFrame]:
    out = {}
    for name in methods:
        path = per_query_path(SeedLayout(root).method(name).root)
        if path:
            out[name] = pq.read_table(path).to_pandas().drop(columns=["top10"], errors="ignore")
    return out


def query_groups(logs: str, queries: list[str]) -> pd.DataFrame:
    """query, bucket (from the training log: works on any logs) and kind (when the world says)."""
    frame = B.query_buckets(logs, queries)
    path = LogsLayout(logs).queries
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
    return markdown_table(frame, floatfmt=".3f")


def recall_curve_table(runs: dict[str, pd.DataFrame], labels: dict[str, str]) -> str:
    rows = []
    for name, per in runs.items():
        row = {"method": labels.get(name, name)}
        for target in ("ct", "qr"):
            for k in RECALL_KS:
                row[f"R@{k} {target.upper()}"] = ratio(per, f"recall@{k}_{target}")
        rows.append(row)
    return markdown_table(pd.DataFrame(rows).set_index("method"), floatfmt=".3f")


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
    return rows_table(rows)
