"""Retrieval metrics as the paper reports them, checked against pytrec_eval in the tests.

A *run* maps each query to its ranked list of video ids (best first). Definitions:

- ``recall@k`` over target pairs (Recall@100 CT, Recall@100 QR): over all (query, video) pairs of the target
  set, the share whose video is in that query's top k. Every pair counts once; a query with many target
  videos weighs more, as in the paper's pair-level definition.
- ``ndcg@k`` on graded qrels with trec_eval's definition (``ndcg_cut``): gain = grade (linear), discount
  log2(rank + 1), ideal ranking from all judged grades of the query; queries without a relevant document are
  skipped; the mean is over the remaining queries (a query missing from the run scores 0).
- ``mrr@k`` on qrels: the reciprocal rank of the first document with grade > 0 within the top k.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

Run = Mapping[str, Sequence[str]]


def recall_at_k(run: Run, pairs: Iterable[tuple[str, str]], k: int) -> float:
    """Share of (query, video) pairs whose video is in the query's top k; NaN when there are no pairs."""
    top = {}
    hits = total = 0
    for query, video in pairs:
        if query not in top:
            top[query] = set(run.get(query, ())[:k])
        hits += video in top[query]
        total += 1
    return hits / total if total else float("nan")


def per_query_hits(run: Run, pairs: Iterable[tuple[str, str]], k: int) -> dict[str, tuple[int, int]]:
    """Per query: (target pairs whose video is in the top k, target pairs)."""
    by_query: dict[str, list[str]] = defaultdict(list)
    for query, video in pairs:
        by_query[query].append(video)
    out = {}
    for q, vids in by_query.items():
        top = set(run.get(q, ())[:k])
        out[q] = (sum(v in top for v in vids), len(vids))
    return out


def per_query_recall(run: Run, pairs: Iterable[tuple[str, str]], k: int) -> dict[str, float]:
    by_query: dict[str, list[str]] = defaultdict(list)
    for query, video in pairs:
        by_query[query].append(video)
    return {q: sum(v in set(run.get(q, ())[:k]) for v in vids) / len(vids) for q, vids in by_query.items()}


def _dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_per_query(run: Run, qrels: Mapping[str, Mapping[str, int]], k: int) -> dict[str, float]:
    out = {}
    for query, judged in qrels.items():
        ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
        if not ideal:
            continue  # trec_eval skips queries without a relevant document
        gains = [max(judged.get(v, 0), 0) for v in run.get(query, ())[:k]]
        out[query] = _dcg(gains) / _dcg(ideal)
    return out


def ndcg_at_k(run: Run, qrels: Mapping[str, Mapping[str, int]], k: int) -> float:
    scores = ndcg_per_query(run, qrels, k)
    return sum(scores.values()) / len(scores) if scores else float("nan")


def mrr_at_k(run: Run, qrels: Mapping[str, Mapping[str, int]], k: int) -> float:
    scores = []
    for query, judged in qrels.items():
        if not any(g > 0 for g in judged.values()):
            continue
        rr = 0.0
        for i, v in enumerate(run.get(query, ())[:k]):
            if judged.get(v, 0) > 0:
                rr = 1.0 / (i + 1)
                break
        scores.append(rr)
    return sum(scores) / len(scores) if scores else float("nan")


def qrels_from_rows(rows: Iterable[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for query, video, grade in rows:
        qrels[query][video] = int(grade)
    return dict(qrels)
