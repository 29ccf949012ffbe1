"""Our metrics against pytrec_eval (trec_eval) on the same runs: NDCG@k, recall and MRR."""

import random

import pytest
import pytrec_eval

from crops_ray.metrics import mrr_at_k, ndcg_at_k, ndcg_per_query, per_query_recall, recall_at_k


def _random_case(seed, n_queries=12, n_docs=60):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(n_docs)]
    qrels, run, scores = {}, {}, {}
    for q in range(n_queries):
        query = f"q{q}"
        judged = rng.sample(docs, rng.randint(0, 15))
        qrels[query] = {d: rng.choice([0, 1, 2, 3]) for d in judged}
        ranked = rng.sample(docs, rng.randint(0, 40))
        run[query] = ranked
        # Distinct, decreasing scores: trec_eval breaks ties by doc id, we rank by list order.
        scores[query] = {d: float(len(ranked) - i) for i, d in enumerate(ranked)}
    return qrels, run, scores


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [4, 10])
def test_ndcg_matches_trec_eval(seed, k):
    qrels, run, scores = _random_case(seed)
    evaluator = pytrec_eval.RelevanceEvaluator(
        {q: j for q, j in qrels.items()}, {f"ndcg_cut.{k}", "recip_rank", "recall.100"}
    )
    ref = evaluator.evaluate({q: s for q, s in scores.items() if s})
    ours = ndcg_per_query(run, qrels, k)
    # trec_eval reports queries present in the run; among those, it skips none but scores 0 without relevant
    # documents: we skip those queries, as the paper's mean over judged queries does.
    for q, value in ours.items():
        if q in ref:
            assert value == pytest.approx(ref[q][f"ndcg_cut_{k}"], abs=1e-9), q
    judged_in_run = [q for q in ours if q in ref]
    assert judged_in_run, "the case should have judged queries"
    # Recall over relevant pairs equals trec_eval's per-query recall averaged with pair weights.
    pairs = [(q, d) for q, j in qrels.items() for d, g in j.items() if g > 0 and q in ref]
    total = sum(ref[q]["recall_100"] * sum(1 for g in qrels[q].values() if g > 0) for q in {p[0] for p in pairs})
    assert recall_at_k(run, pairs, 100) == pytest.approx(total / len(pairs), abs=1e-9)
    per_query = per_query_recall(run, pairs, 100)
    for q, value in per_query.items():
        assert value == pytest.approx(ref[q]["recall_100"], abs=1e-9)


def test_mrr_matches_trec_eval():
    qrels, run, scores = _random_case(99, n_queries=30)
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate({q: s for q, s in scores.items() if s})
    ours_by_query = {
        q: mrr_at_k({q: run[q]}, {q: qrels[q]}, 1000) for q in ref if any(g > 0 for g in qrels[q].values())
    }
    for q, value in ours_by_query.items():
        assert value == pytest.approx(ref[q]["recip_rank"], abs=1e-9)


def test_hand_checked_values():
    run = {"a": ["x", "y", "z"], "b": ["u"]}
    qrels = {"a": {"y": 3, "z": 1, "w": 2}, "b": {"u": 0}}
    # DCG = 3/log2(3) + 1/log2(4); ideal = 3/1 + 2/log2(3) + 1/2
    import math

    expected = (3 / math.log2(3) + 0.5) / (3 + 2 / math.log2(3) + 0.5)
    assert ndcg_at_k(run, qrels, 4) == pytest.approx(expected)  # "b" has no relevant document: skipped
    assert recall_at_k(run, [("a", "y"), ("a", "w"), ("b", "u"), ("c", "x")], 2) == pytest.approx(2 / 4)
    assert mrr_at_k(run, qrels, 10) == pytest.approx(0.5)
    assert recall_at_k(run, [], 100) != recall_at_k(run, [], 100)  # NaN when there is nothing to measure
