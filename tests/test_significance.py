"""Paired bootstrap CIs: scipy's result against a direct resampling in numpy, the splits of a run, and whether the
ablation's gains add up (the interaction bootstrapped as one statistic)."""

import json

import numpy as np
import pandas as pd
import pytest

from crops_ray.report import additivity as A
from crops_ray.report import per_query as R
from crops_ray.significance import compare_runs, paired_bootstrap, relative_change_bootstrap


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
    """A small gain that varies per query, on queries whose difficulty varies much more: resampling the two runs
    together (paired) finds it; resampling them apart, as an unpaired test would, cannot tell it from zero. A
    pairing that broke (the runs resampled apart, or one run's queries reordered) fails the first assertion."""
    rng = np.random.default_rng(5)
    base = rng.random(150)  # per-query difficulty: sd 0.29
    better = base + 0.02 + rng.normal(0, 0.03, 150)  # gain 0.02, sd 0.03 per query
    ci = paired_bootstrap(better, base, resamples=2000)
    assert ci.significant and 0 < ci.low < 0.02 < ci.high < 0.04
    idx_a, idx_b = rng.integers(0, 150, size=(2, 4000, 150))
    unpaired = np.quantile(better[idx_a].mean(1) - base[idx_b].mean(1), [0.025, 0.975])
    assert unpaired[0] < 0 < unpaired[1]  # the same data, unpaired: no detectable difference
    assert ci.high - ci.low < (unpaired[1] - unpaired[0]) / 5
    shuffled = paired_bootstrap(better, rng.permutation(base), resamples=2000)  # a pairing lost: the gain drowns
    assert not shuffled.significant


def _users(rng, n, ctr):
    """Per-user (clicked requests, requests) of an arm whose users click in a share ``ctr`` of their requests."""
    requests = rng.poisson(4, size=n).astype(float) + 1
    return rng.binomial(requests.astype(int), ctr).astype(float), requests


@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_relative_change_matches_a_direct_resampling_of_users(method):
    """Table 2's interval: A's CTR relative to B's, the same users resampled in both arms."""
    rng = np.random.default_rng(8)
    b_clicks, requests = _users(rng, 500, 0.40)
    a_clicks = np.minimum(requests, b_clicks + rng.binomial(1, 0.3, size=500))  # A's users click a bit more
    ci = relative_change_bootstrap(a_clicks, requests, b_clicks, requests, resamples=4000, seed=1, method=method)
    assert ci.diff == pytest.approx(a_clicks.sum() / b_clicks.sum() - 1) and ci.units == 500
    idx = np.random.default_rng(2).integers(0, 500, size=(20000, 500))
    direct = a_clicks[idx].sum(1) / b_clicks[idx].sum(1) - 1  # one resample of users for both arms
    low, high = np.quantile(direct, [0.025, 0.975])
    assert ci.low == pytest.approx(low, abs=0.006) and ci.high == pytest.approx(high, abs=0.006)


def test_relative_change_finds_a_constructed_lift_and_not_a_missing_one():
    rng = np.random.default_rng(9)
    base_clicks, requests = _users(rng, 800, 0.30)
    lifted = rng.binomial(requests.astype(int), 0.36).astype(float)  # +20% CTR
    ci = relative_change_bootstrap(lifted, requests, base_clicks, requests, resamples=2000)
    assert ci.significant and 0 < ci.low < 0.2 < ci.high
    same_rate = rng.binomial(requests.astype(int), 0.30).astype(float)  # the same CTR, other draws
    ci = relative_change_bootstrap(same_rate, requests, base_clicks, requests, resamples=2000)
    assert ci.low < 0 < ci.high and not ci.significant
    same = relative_change_bootstrap(base_clicks, requests, base_clicks.copy(), requests.copy())
    assert (same.diff, same.low, same.high) == (0.0, 0.0, 0.0) and not same.significant


def _per_query(hits, pairs, ndcg):
    return pd.DataFrame(
        {"query": [f"q{i}" for i in range(len(hits))], "hits@100_ct": hits, "pairs_ct": pairs, "ndcg@4": ndcg}
    )


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


# ---------------------------------------------------------------------------------------------- additivity


def _ablation_runs(extra_whole, seed=7, n=400):
    """Per-query frames of P0 (fs_lr), P0 + each perspective and all of them (crops), plus crops_binary.

    Each perspective adds its own hits to P0's; ``crops`` adds all three plus ``extra_whole`` (per query): zero for
    exactly additive gains, noise that sums to zero for additive-on-average, a positive surplus for super-additive.
    """
    rng = np.random.default_rng(seed)
    pairs = rng.integers(1, 6, size=n).astype(float)
    base = rng.binomial(pairs.astype(int), 0.5).astype(float)
    rates = {"crops_p1": 0.3, "crops_p2": 0.2, "crops_p3": 0.1}
    gains = {m: rng.binomial(1, p, size=n).astype(float) for m, p in rates.items()}
    ndcg_base = rng.random(n) * 0.8
    hits = {"fs_lr": base, **{m: base + g for m, g in gains.items()}, "crops": base + sum(gains.values()) + extra_whole}
    hits["crops_binary"] = hits["crops"] - rng.binomial(1, 0.2, size=n)
    ndcg = {m: ndcg_base + 0.05 * (h - base) for m, h in hits.items()}  # NDCG moves with the hits
    return {m: _per_query(h, pairs, ndcg[m]) for m, h in hits.items()}


def _direct_interaction(runs, resamples, seed, parts=("crops_p1", "crops_p2", "crops_p3")):
    """The interaction's percentile interval by plain resampling: (crops - P0) - sum_k (part_k - P0), pooled ratios."""
    num = {m: runs[m]["hits@100_ct"].to_numpy(float) for m in runs}
    den = runs["fs_lr"]["pairs_ct"].to_numpy(float)
    idx = np.random.default_rng(seed).integers(0, len(den), size=(resamples, len(den)))
    ratio = {m: v[idx].sum(1) / den[idx].sum(1) for m, v in num.items()}
    stats = (ratio["crops"] - ratio["fs_lr"]) - sum(ratio[p] - ratio["fs_lr"] for p in parts)
    return np.quantile(stats, [0.025, 0.975])


def test_exactly_additive_gains_have_an_interaction_interval_at_zero():
    runs = _ablation_runs(extra_whole=0.0)
    out = A.additivity(runs, resamples=500)
    ct = out["metrics"]["recall@100_ct"]
    pairs, base = runs["fs_lr"]["pairs_ct"].sum(), runs["fs_lr"]["hits@100_ct"].sum()
    for m in ("crops_p1", "crops_p2", "crops_p3"):
        assert ct["gains"][m]["diff"] == pytest.approx((runs[m]["hits@100_ct"].sum() - base) / pairs)
    assert ct["sum_of_gains"] == pytest.approx(ct["whole"]["diff"])
    assert ct["interaction"]["diff"] == pytest.approx(0.0, abs=1e-12)
    assert ct["interaction"]["ci_low"] <= 0.0 <= ct["interaction"]["ci_high"]
    assert ct["interaction"]["verdict"] == "additive"
    assert "recall@100_qr" not in out["metrics"]  # the frames have no QR columns: skipped, not a crash


def test_additive_on_average_contains_zero_and_super_additive_excludes_it():
    n = 400
    noise = np.random.default_rng(11).permutation(np.r_[np.ones(60), -np.ones(60), np.zeros(n - 120)])  # sums to 0
    out = A.additivity(_ablation_runs(extra_whole=noise, n=n), resamples=2000)
    additive = out["metrics"]["recall@100_ct"]["interaction"]
    assert additive["diff"] == pytest.approx(0.0, abs=1e-12)
    assert additive["ci_low"] < 0.0 < additive["ci_high"] and additive["verdict"] == "additive"

    surplus = np.random.default_rng(12).binomial(1, 0.3, size=n).astype(float)  # all three together find more
    runs = _ablation_runs(extra_whole=surplus, n=n)
    out = A.additivity(runs, resamples=4000, seed=1)
    inter = out["metrics"]["recall@100_ct"]["interaction"]
    assert inter["diff"] == pytest.approx(surplus.sum() / runs["fs_lr"]["pairs_ct"].sum())
    assert inter["ci_low"] > 0 and inter["verdict"] == "super-additive"
    low, high = _direct_interaction(runs, 20000, seed=2)
    assert inter["ci_low"] == pytest.approx(low, abs=0.006) and inter["ci_high"] == pytest.approx(high, abs=0.006)
    assert out["metrics"]["ndcg@4"]["interaction"]["verdict"] == "super-additive"
    binary = out["metrics"]["recall@100_ct"]["labels_vs_binary"]
    hits = {m: runs[m]["hits@100_ct"].sum() for m in ("crops", "crops_binary")}
    assert binary["diff"] > 0
    assert binary["diff"] == pytest.approx((hits["crops"] - hits["crops_binary"]) / runs["fs_lr"]["pairs_ct"].sum())


def test_additivity_report_table_and_json_and_missing_runs():
    runs = _ablation_runs(extra_whole=np.random.default_rng(12).binomial(1, 0.3, size=400).astype(float))
    labels = {
        "fs_lr": "FS-LR-style",
        "crops": "CroPS",
        "crops_p1": "CroPS, P1 only",
        "crops_p2": "CroPS, P2 only",
        "crops_p3": "CroPS, P3 only",
        "crops_binary": "CroPS, binary",
    }
    per_seed = {0: A.additivity(runs, seed=0, resamples=300), 1: A.additivity(runs, seed=1, resamples=300)}
    table, data = A.additivity_report(per_seed, labels)
    assert set(data) == {"0", "1"} and data["0"]["parts"] == ["crops_p1", "crops_p2", "crops_p3"]
    for row in (
        "P0 + P1 minus P0: CroPS, P1 only minus FS-LR-style",
        "sum of the perspectives' gains",
        "P0 + all minus P0: CroPS minus FS-LR-style",
        "interaction: all minus the sum",
        "super-additive",
        "binary labels + InfoNCE: CroPS minus CroPS, binary",
    ):
        assert row in table, row
    assert " ± " in table  # two seeds: mean ± sd first
    json.dumps(data)  # JSON-ready for metrics.json
    without_p3 = {m: f for m, f in runs.items() if m != "crops_p3"}
    assert A.additivity(without_p3, resamples=200)["parts"] == ["crops_p1", "crops_p2"]
    assert A.additivity({"crops": runs["crops"], "crops_p1": runs["crops_p1"]}) == {}  # no P0 run
    assert A.additivity_report({0: {}}, labels) == ("", {})
