"""Is a difference between two methods real? Paired bootstrap confidence intervals over queries.

Both methods are evaluated on the same queries, so the unit of resampling is the query, and both runs are
resampled together (paired). Every metric of Table 1 is a ratio of per-query sums: Recall@k over target pairs
is sum(hits) / sum(pairs) (the paper's pair-level definition), NDCG@k is sum(ndcg) / number of queries. The
interval is for the difference of that ratio, A minus B, from ``scipy.stats.bootstrap`` (paired, BCa by
default); ``tests/test_significance.py`` checks it against a direct resampling in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Interval:
    diff: float  # A - B on the full sample
    low: float
    high: float
    queries: int

    @property
    def significant(self) -> bool:
        return not (self.low <= 0.0 <= self.high)

    def as_dict(self) -> dict:
        return {
            "diff": self.diff,
            "ci_low": self.low,
            "ci_high": self.high,
            "queries": self.queries,
            "significant": self.significant,
        }


def ratio_difference(num_a: np.ndarray, num_b: np.ndarray, den: np.ndarray, axis: int = -1) -> np.ndarray:
    """sum(num_a) / sum(den) - sum(num_b) / sum(den) along ``axis`` (vectorised for scipy)."""
    d = np.sum(den, axis=axis)
    return (np.sum(num_a, axis=axis) - np.sum(num_b, axis=axis)) / d


def paired_bootstrap(
    num_a, num_b, den=None, resamples: int = 2000, confidence: float = 0.95, seed: int = 0, method: str = "BCa"
) -> Interval:
    """Paired bootstrap CI of ``sum(num_a)/sum(den) - sum(num_b)/sum(den)`` over queries.

    ``num_a``/``num_b``: per-query numerators of the two methods (hits, or per-query NDCG); ``den``: per-query
    denominators (target pairs; None: one per query, i.e. a mean over queries).
    """
    from scipy import stats

    a, b = np.asarray(num_a, dtype=float), np.asarray(num_b, dtype=float)
    n = np.ones_like(a) if den is None else np.asarray(den, dtype=float)
    if not (a.shape == b.shape == n.shape) or a.ndim != 1:
        raise ValueError(f"paired_bootstrap needs three 1-d arrays of one length, got {a.shape}, {b.shape}, {n.shape}")
    if len(a) < 2 or n.sum() <= 0:
        return Interval(float("nan"), float("nan"), float("nan"), len(a))
    diff = float(ratio_difference(a, b, n))
    if np.allclose(a, b):
        return Interval(diff, diff, diff, len(a))

    def bootstrap(kind: str):
        return stats.bootstrap(
            (a, b, n),
            ratio_difference,
            paired=True,
            vectorized=True,
            n_resamples=resamples,
            confidence_level=confidence,
            method=kind,
            random_state=np.random.default_rng(seed),
        )

    res = bootstrap(method)
    low, high = res.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):  # BCa can fail on degenerate samples: fall back
        res = bootstrap("percentile")
        low, high = res.confidence_interval
    return Interval(diff, float(low), float(high), len(a))


# Table-1 metrics and how each is a ratio of per-query columns of ``per_query.parquet``: (numerator, denominator).
METRICS = {
    "recall@100_ct": ("hits@100_ct", "pairs_ct"),
    "recall@100_qr": ("hits@100_qr", "pairs_qr"),
    "ndcg@4": ("ndcg@4", None),
}


def compare_runs(
    a: pd.DataFrame, b: pd.DataFrame, metrics: dict = METRICS, resamples: int = 2000, seed: int = 0
) -> dict[str, dict]:
    """Per metric, the paired CI of A - B from two ``per_query`` frames (queries both runs scored)."""
    out = {}
    for name, (num, den) in metrics.items():
        cols = [num] + ([den] if den else [])
        if num not in a.columns or num not in b.columns:
            continue
        joined = a[["query", *cols]].merge(b[["query", num]], on="query", suffixes=("_a", "_b")).dropna()
        if den:
            joined = joined[joined[den] > 0]
        out[name] = paired_bootstrap(
            joined[f"{num}_a"], joined[f"{num}_b"], joined[den] if den else None, resamples=resamples, seed=seed
        ).as_dict()
    return out
