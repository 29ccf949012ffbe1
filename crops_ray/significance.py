"""Is a difference between two methods real? Paired bootstrap confidence intervals, one for both tables.

Table 1: both methods are evaluated on the same queries, so the unit of resampling is the query, and both runs
are resampled together (paired). Every metric of Table 1 is a ratio of per-query sums: Recall@k over target pairs
is sum(hits) / sum(pairs) (the paper's pair-level definition), NDCG@k is sum(ndcg) / number of queries. The
interval is for the difference of that ratio, A minus B (:func:`paired_bootstrap`).

Table 2 (the simulated online A/B test): both arms meet the same users, so the unit is the user. Every rate is a
ratio of per-user sums (CTR = clicked requests / requests), and the interval is for A's rate relative to B's,
A / B - 1 (:func:`relative_change_bootstrap`).

Both come from :func:`bootstrap_interval`: ``scipy.stats.bootstrap``, paired, BCa by default;
``tests/test_significance.py`` checks it against a direct resampling in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Interval:
    diff: float  # A - B (Table 1) or A / B - 1 (Table 2) on the full sample
    low: float
    high: float
    units: int  # how many were resampled: queries (Table 1) or users (Table 2)

    @property
    def significant(self) -> bool:
        return not (self.low <= 0.0 <= self.high)

    def as_dict(self) -> dict:
        return {
            "diff": self.diff,
            "ci_low": self.low,
            "ci_high": self.high,
            "queries": self.units,
            "significant": self.significant,
        }


def ratio_difference(num_a: np.ndarray, num_b: np.ndarray, den: np.ndarray, axis: int = -1) -> np.ndarray:
    """sum(num_a) / sum(den) - sum(num_b) / sum(den) along ``axis`` (vectorised for scipy)."""
    d = np.sum(den, axis=axis)
    return (np.sum(num_a, axis=axis) - np.sum(num_b, axis=axis)) / d


def relative_change(num_a, den_a, num_b, den_b, axis: int = -1) -> np.ndarray:
    """(sum(num_a) / sum(den_a)) / (sum(num_b) / sum(den_b)) - 1 along ``axis``: A's rate relative to B's."""
    rate_a = np.sum(num_a, axis=axis) / np.sum(den_a, axis=axis)
    return rate_a / (np.sum(num_b, axis=axis) / np.sum(den_b, axis=axis)) - 1


# Values of one array resampled at once: scipy holds resamples x units of each array (and units x units for BCa's
# jackknife); beyond this it works in batches. 2**23 float64 values are 64 MiB.
MAX_RESAMPLED_VALUES = 2**23


def bootstrap_interval(
    samples: tuple[np.ndarray, ...], statistic, resamples: int, confidence: float, seed: int, method: str
) -> tuple[float, float]:
    """The one bootstrap behind both tables: scipy's paired CI of ``statistic(*samples, axis=-1)``, resampling the
    samples' common units (queries or users) together. BCa falls back to percentile where it cannot be computed."""
    from scipy import stats

    units = len(samples[0])
    batch = None if resamples * units <= MAX_RESAMPLED_VALUES else max(1, MAX_RESAMPLED_VALUES // units)

    def bootstrap(kind: str):
        return stats.bootstrap(
            samples,
            statistic,
            paired=True,
            vectorized=True,
            n_resamples=resamples,
            batch=batch,
            confidence_level=confidence,
            method=kind,
            random_state=np.random.default_rng(seed),
        )

    low, high = bootstrap(method).confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):  # BCa can fail on degenerate samples: fall back
        low, high = bootstrap("percentile").confidence_interval
    return float(low), float(high)


def _as_paired_arrays(name: str, *arrays) -> list[np.ndarray]:
    out = [np.asarray(x, dtype=float) for x in arrays]
    if len({x.shape for x in out}) != 1 or out[0].ndim != 1:
        raise ValueError(f"{name} needs 1-d arrays of one length, got {', '.join(str(x.shape) for x in out)}")
    return out


def paired_bootstrap(
    num_a, num_b, den=None, resamples: int = 2000, confidence: float = 0.95, seed: int = 0, method: str = "BCa"
) -> Interval:
    """Table 1: paired bootstrap CI of ``sum(num_a)/sum(den) - sum(num_b)/sum(den)`` over queries.

    ``num_a``/``num_b``: per-query numerators of the two methods (hits, or per-query NDCG); ``den``: per-query
    denominators (target pairs; None: one per query, i.e. a mean over queries).
    """
    a, b, n = _as_paired_arrays("paired_bootstrap", num_a, num_b, np.ones(len(num_a)) if den is None else den)
    if len(a) < 2 or n.sum() <= 0:
        return Interval(float("nan"), float("nan"), float("nan"), len(a))
    diff = float(ratio_difference(a, b, n))
    if np.allclose(a, b):
        return Interval(diff, diff, diff, len(a))
    return Interval(diff, *bootstrap_interval((a, b, n), ratio_difference, resamples, confidence, seed, method), len(a))


def relative_change_bootstrap(
    num_a, den_a, num_b, den_b, resamples: int = 2000, confidence: float = 0.95, seed: int = 0, method: str = "BCa"
) -> Interval:
    """Table 2: paired bootstrap CI of A's rate relative to B's, ``(sum(num_a)/sum(den_a)) / (sum(num_b)/sum(den_b))
    - 1``, over users: per-user counts of the two arms (clicked requests and requests, say), the same users in both."""
    samples = _as_paired_arrays("relative_change_bootstrap", num_a, den_a, num_b, den_b)
    a_num, a_den, b_num, b_den = samples
    if len(a_num) < 2 or min(a_den.sum(), b_num.sum(), b_den.sum()) <= 0:
        return Interval(float("nan"), float("nan"), float("nan"), len(a_num))
    change = float(relative_change(*samples))
    if np.allclose(a_num, b_num) and np.allclose(a_den, b_den):
        return Interval(change, change, change, len(a_num))
    return Interval(
        change, *bootstrap_interval(tuple(samples), relative_change, resamples, confidence, seed, method), len(a_num)
    )


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
