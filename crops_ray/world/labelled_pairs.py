"""Labelled (query, text, label) pairs from a world's graded judgments: the default set the discriminator is
calibrated on when a team brings no labelled pairs of its own (world truth, so it lives with the world)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crops_ray.discriminator.log_labels import query_split
from crops_ray.schema import table_files
from crops_ray.world.audit import judgments_path


def world_labelled_pairs(world: str, n: int, heldout: bool, seed: int = 0, min_grade: int = 2) -> pa.Table:
    """(query, text, label) pairs from a world's graded qrels: half relevant, half not (hard and random).

    Relevant: grade >= ``min_grade``. Irrelevant (lower grades, marginal ones included): half from the query's own
    candidates' neighbourhood (videos of the same ambiguous word or the same domain, grade 0), half random. Only the
    queries on one side of :func:`query_split` are used, so a calibration fitted on one side is measured on the other.
    """
    rng = np.random.default_rng(seed + (1 if heldout else 0))
    qrels = pq.read_table(judgments_path(f"{world}/eval")).to_pandas()
    truth = pq.read_table(f"{world}/eval/video_truth.parquet").to_pandas()
    queries = pq.read_table(f"{world}/eval/queries.parquet").to_pandas()
    videos = pq.read_table(table_files(world, "videos")).to_pandas().set_index("video_id")["text"]
    relevant = qrels[qrels["grade"] >= min_grade].groupby("query")["video_id"].apply(set).to_dict()
    queries = queries[queries["query"].isin(relevant)]  # a world judges only the queries users typed
    queries = queries[query_split(queries["query"], heldout)]
    per_query = max(1, n // (2 * max(1, len(queries))))
    domain_of = truth.set_index("video_id")["domain"]
    by_domain = truth.groupby("domain")["video_id"].apply(np.array).to_dict()
    by_word = truth[truth["word"] != ""].groupby("word")["video_id"].apply(np.array).to_dict()
    all_ids = truth["video_id"].to_numpy()
    rows: list[tuple[str, str, int]] = []
    for q in queries.itertuples():
        pos = sorted(relevant.get(q.query, ()))
        if not pos:
            continue
        n_pos = min(per_query, len(pos))
        for v in rng.choice(pos, size=n_pos, replace=False):
            rows.append((q.query, videos[v], 1))
        # Hard negatives: the same word's other senses, else the same domain as a relevant video.
        near = by_word.get(q.word) if q.word else None
        if near is None:
            near = by_domain[domain_of[pos[0]]]
        near = np.array([v for v in near if v not in relevant[q.query]])
        n_hard = min(n_pos // 2, len(near))  # as many negatives as positives: a balanced set per query
        negatives = list(rng.choice(near, size=n_hard, replace=False)) if n_hard else []
        while len(negatives) < n_pos:
            v = all_ids[rng.integers(len(all_ids))]
            if v not in relevant[q.query]:
                negatives.append(v)
        rows.extend((q.query, videos[v], 0) for v in negatives)
    return pa.table(
        {
            "query": [r[0] for r in rows],
            "text": [r[1] for r in rows],
            "label": pa.array([r[2] for r in rows], pa.int8()),
        }
    )
