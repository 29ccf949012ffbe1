"""Paired bootstrap CIs: scipy's result against a direct resampling in numpy, and the splits of a run."""

import numpy as np
import pandas as pd
import pytest

from crops_ray import report as R
from crops_ray.significance import compare_runs, paired_bootstrap


def _direct_percentile(a, b, n, resamples, seed):
    """The plain definition: resample queries with replacement, recompute the pooled ratio difference."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(resamples, len(a)))
    stats = (a[idx].sum(1) - b[idx].sum(1)) / n[idx].sum(1)
    return np.quantile(stats, [0.025, 0.975])


@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_paired_bootstrap_matches_a_direct_resampling(method):
    rng = np.random.default_rng(3)
    pairs = rng.integers(1, 6, size=300).astype(float)
    hits_b = rng.binomial(pairs.astype(int), 0.55).astype(float)
    hits_a = np.minimum(pairs, hits_b + rng.binomial(1, 0.3, size=300))  # A finds a bit more
    ci = paired_bootstrap(hits_a, hits_b, pairs, resamples=4000, seed=1, method=method)
    assert ci.diff == pytest.approx((hits_a.sum() - hits_b.sum()) / pairs.sum())
    low, high = _direct_percentile(hits_a, hits_b, pairs, 20000, seed=2)
    assert ci.low == pytest.approx(low, abs=0.006) and ci.high == pytest.approx(high, abs=0.006)
    assert ci.significant and ci.low > 0


def test_no_difference_is_not_significant_and_identical_runs_have_a_zero_interval():
    rng = np.random.default_rng(0)
    x = rng.random(200)
    noise = rng.permutation(x)  # same distribution, paired at random
    ci = paired_bootstrap(x, noise, resamples=2000)
    assert not ci.significant
    same = paired_bootstrap(x, x.copy())
    assert (same.diff, same.low, same.high) == (0.0, 0.0, 0.0) and not same.significant


def test_paired_beats_unpaired_power():
    """A small consistent gain on noisy queries is detected because both runs are resampled together."""
    rng = np.random.default_rng(5)
    base = rng.random(150)
    ci = paired_bootstrap(base + 0.02, base, resamples=2000)
    assert ci.significant and ci.low > 0.019


def _per_query(hits, pairs, ndcg):
    return pd.DataFrame({"query": [f"q{i}" for i in range(len(hits))], "hits@100_ct": hits, "pairs_ct": pairs, "ndcg@4": ndcg})


def test_compare_runs_and_bucket_split_use_the_pair_level_ratio():
    a = _per_query([2, 1, 0, 3], [2, 2, 1, 4], [1.0, 0.5, 0.0, 0.8])
    b = _per_query([1, 1, 0, 1], [2, 2, 1, 4], [0.5, 0.5, 0.0, 0.4])
    out = compare_runs(a, b, resamples=500)
    assert out["recall@100_ct"]["diff"] == pytest.approx((6 - 3) / 9)
    assert out["ndcg@4"]["diff"] == pytest.approx((2.3 - 1.4) / 4)
    groups = pd.DataFrame({"query": ["q0", "q1", "q2", "q3"], "bucket": ["head", "head", "tail", "unseen"]})
    table = R.split_table({"a": a}, groups, "bucket", {"a": "A"}, metrics=(("recall@100_ct", "R@100 CT"),))
    assert "head: R@100 CT (2 q)" in table and "0.750" in table  # (2 + 1) / (2 + 2)
    assert "unseen: R@100 CT (1 q)" in table
