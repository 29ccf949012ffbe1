"""HLA assembly: log stages (P0) + reformulation (P1) + recommendation (P2) + LLM (P3) -> labelled samples.

1. :func:`collapse_videos` (Ray Data ``groupby(<hash bucket of video_id>).map_groups``) turns every log row
   and mined candidate of a video, plus the video's own row, into one *pair* row per (query, video): its text, the best
   log stage and its level, the click count, and whether P1/P2 proposed it. Pairs are therefore deduplicated
   before the discriminator sees them, and rows of one video arrive together (its embedding is computed once).
2. The discriminator scores the pairs P1 or P2 proposed (:mod:`crops_ray.discriminator`).
3. :func:`label_candidates` decides which mined candidates pass (gate, theta > alpha): the *candidates* table.
4. :func:`to_samples` keeps, per (query, video), the highest level among its sources (ties: HLA's tie rule,
   ``Source.tie_rank``, so an observed click wins over a mined duplicate at the same level);
   :func:`llm_samples` turns P3's kept descriptions into samples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crops_ray.discriminator.calibration import Calibration
from crops_ray.engine.users import key_buckets
from crops_ray.hla import SOURCE_RANK, LevelConfig
from crops_ray.schema import SAMPLES_SCHEMA, STAGES
from crops_ray.sources import GATED_SOURCES, Source

VIDEO_ROW = "__video__"  # the marker source of a video's own row in the collapse input
MAX_REFORMULATIONS_KEPT = 8  # distinct reformulated queries kept per pair (for the gate and for reading)

COLLAPSE_SCHEMA = pa.schema(
    [
        ("bucket", pa.int64()),  # hash of video_id: the shuffle key (users.key_buckets)
        ("video_id", pa.string()),
        ("query", pa.string()),
        ("source", pa.string()),
        ("text", pa.string()),
        ("reformulated_query", pa.string()),
        ("user_id", pa.string()),
    ]
)

PAIR_SCHEMA = pa.schema(
    [
        ("query", pa.string()),
        ("video_id", pa.string()),
        ("text", pa.string()),
        ("log_level", pa.int8()),  # the best log stage's HLA level; null when the logs never paired them
        ("log_source", pa.string()),
        ("clicks", pa.int32()),
        (Source.REFORMULATION, pa.bool_()),  # P1 proposed it
        ("reformulated_queries", pa.list_(pa.string())),
        ("reformulation_users", pa.int32()),
        (Source.RECOMMENDATION, pa.bool_()),  # P2 proposed it
        ("recommendation_users", pa.int32()),
        ("needs_score", pa.bool_()),
    ]
)

SCORED_SCHEMA = pa.schema(  # the score stage's work: the gate's raw score, before its calibration
    list(PAIR_SCHEMA) + [("score", pa.float32()), ("gate_score", pa.float32())]
)

CANDIDATES_SCHEMA = pa.schema(
    list(PAIR_SCHEMA)
    + [
        ("score", pa.float32()),  # theta(query, text) where scored: the higher of the two below
        ("raw_score", pa.float32()),  # the gate model's raw score (theta = sigmoid(a * raw + b))
        ("reformulation_theta", pa.float32()),  # theta under P1's calibration, where P1 proposed the pair
        ("recommendation_theta", pa.float32()),  # theta under P2's calibration, where P2 proposed the pair
        ("gate_score", pa.float32()),  # best bi-encoder cosine of the query and a reformulated query
        ("gate_pass", pa.bool_()),
        ("reformulation_kept", pa.bool_()),
        ("recommendation_kept", pa.bool_()),
    ]
)


# ---------------------------------------------------------------------------------------------- inputs


def log_rows(batch: pa.Table, buckets: int) -> pa.Table:
    """Search-log rows as collapse input (P0): the stage is the source."""
    n = batch.num_rows
    return pa.table(
        {
            "bucket": key_buckets(batch["video_id"], buckets),
            "video_id": batch["video_id"],
            "query": batch["query"],
            "source": batch["stage"],
            "text": pa.nulls(n, pa.string()),
            "reformulated_query": pa.nulls(n, pa.string()),
            "user_id": batch["user_id"],
        },
        schema=COLLAPSE_SCHEMA,
    )


def candidate_rows(batch: pa.Table, buckets: int) -> pa.Table:
    """P1/P2 candidate rows (users.USER_CANDIDATE_SCHEMA) as collapse input."""
    return pa.table(
        {
            "bucket": key_buckets(batch["video_id"], buckets),
            "video_id": batch["video_id"],
            "query": batch["query"],
            "source": batch["source"],
            "text": pa.nulls(batch.num_rows, pa.string()),
            "reformulated_query": batch["reformulated_query"],
            "user_id": batch["user_id"],
        },
        schema=COLLAPSE_SCHEMA,
    )


def video_rows(batch: pa.Table, buckets: int) -> pa.Table:
    n = batch.num_rows
    return pa.table(
        {
            "bucket": key_buckets(batch["video_id"], buckets),
            "video_id": batch["video_id"],
            "query": pa.nulls(n, pa.string()),
            "source": pa.array([VIDEO_ROW] * n, pa.string()),
            "text": batch["text"],
            "reformulated_query": pa.nulls(n, pa.string()),
            "user_id": pa.nulls(n, pa.string()),
        },
        schema=COLLAPSE_SCHEMA,
    )


# ---------------------------------------------------------------------------------------------- collapse


def collapse_videos(rows: pd.DataFrame, levels: dict[str, int]) -> pa.Table:
    """The rows of some videos (one bucket) -> one pair per (query, video), PAIR_SCHEMA, ordered by video then
    query (a video's pairs stay together for the scorer's embedding cache). Rows of videos missing from
    ``videos`` are dropped."""
    is_video = rows["source"] == VIDEO_ROW
    text = rows.loc[is_video, ["video_id", "text"]].drop_duplicates("video_id")
    rows = rows.loc[
        ~is_video & rows["video_id"].isin(text["video_id"]),
        ["video_id", "query", "source", "reformulated_query", "user_id"],
    ]
    if rows.empty:
        return PAIR_SCHEMA.empty_table()
    key = ["video_id", "query"]
    pairs = rows[key].drop_duplicates().sort_values(key, kind="stable").merge(text, on="video_id", how="left")
    stage = rows[rows["source"].isin(STAGES)]
    if len(stage):
        # equal levels: HLA's tie rule (the better stage) names the pair
        stage = stage.assign(level=stage["source"].map(levels), rank=stage["source"].map(SOURCE_RANK))
        best = stage.sort_values(
            key + ["level", "rank"], ascending=[True, True, False, True], kind="stable"
        ).drop_duplicates(key)
        pairs = pairs.merge(
            best[key + ["level", "source"]].rename(columns={"level": "log_level", "source": "log_source"}),
            on=key,
            how="left",
        )
        clicks = stage[stage["source"] == Source.CLICKED].groupby(key).size().rename("clicks")
        pairs = pairs.merge(clicks, left_on=key, right_index=True, how="left")
    else:
        pairs = pairs.assign(log_level=None, log_source=None, clicks=0)
    p1 = rows[rows["source"] == Source.REFORMULATION]
    if len(p1):
        agg = p1.groupby(key).agg(
            reformulated_queries=("reformulated_query", lambda q: sorted(set(q))[:MAX_REFORMULATIONS_KEPT]),
            reformulation_users=("user_id", "nunique"),
        )
        pairs = pairs.merge(agg, left_on=key, right_index=True, how="left")
    else:
        pairs = pairs.assign(reformulated_queries=None, reformulation_users=0)
    p2 = rows[rows["source"] == Source.RECOMMENDATION]
    if len(p2):
        pairs = pairs.merge(
            p2.groupby(key).agg(recommendation_users=("user_id", "nunique")), left_on=key, right_index=True, how="left"
        )
    else:
        pairs = pairs.assign(recommendation_users=0)
    pairs[Source.REFORMULATION] = pairs["reformulation_users"].fillna(0) > 0
    pairs[Source.RECOMMENDATION] = pairs["recommendation_users"].fillna(0) > 0
    pairs["needs_score"] = pairs[Source.REFORMULATION] | pairs[Source.RECOMMENDATION]
    pairs["reformulated_queries"] = [q if isinstance(q, list) else [] for q in pairs["reformulated_queries"]]
    for col in ("clicks", "reformulation_users", "recommendation_users"):
        pairs[col] = pairs[col].fillna(0).astype("int32")
    pairs["log_level"] = pairs["log_level"].astype("Int8")
    return pa.Table.from_pandas(pairs[PAIR_SCHEMA.names], schema=PAIR_SCHEMA, preserve_index=False)


def pairs_dataset(
    search, videos, user_candidates, levels: LevelConfig, partitions: int, buckets: int, num_cpus: float = 0.5
):
    """Ray Data: PAIR_SCHEMA rows, one per (query, video) seen in the logs or proposed by P1/P2, shuffled by a
    hash bucket of the video so a video's log rows, candidates and text meet in one call."""
    kw = {"buckets": buckets}
    parts = search.map_batches(log_rows, batch_format="pyarrow", fn_kwargs=kw, num_cpus=num_cpus)
    if user_candidates is not None:
        parts = parts.union(
            user_candidates.map_batches(candidate_rows, batch_format="pyarrow", fn_kwargs=kw, num_cpus=num_cpus)
        )
    parts = parts.union(videos.map_batches(video_rows, batch_format="pyarrow", fn_kwargs=kw, num_cpus=num_cpus))
    return parts.groupby("bucket", num_partitions=partitions).map_groups(
        collapse_videos, batch_format="pandas", fn_kwargs={"levels": dict(levels.levels)}, num_cpus=num_cpus
    )


# ---------------------------------------------------------------------------------------------- labels


def label_candidates(
    batch: pa.Table, alpha: float, gate: str, gate_threshold: float, calibration: dict | None = None
) -> pa.Table:
    """Scored pairs -> CANDIDATES_SCHEMA: which P1/P2 candidates pass (gate, then theta > alpha).

    With ``calibration`` (a :class:`crops_ray.discriminator.Calibration` as a dict) the batch holds the gate's raw
    scores (SCORED_SCHEMA), turned here into each proposing source's theta; without, it holds candidates already
    labelled (their thetas are kept, only alpha and the gate are applied again: the alpha sweep)."""
    n = batch.num_rows
    if "gate_score" not in batch.column_names:
        batch = batch.append_column("gate_score", pa.nulls(n, pa.float32()))
    p1_proposed = pc.fill_null(batch[Source.REFORMULATION], False)
    p2_proposed = pc.fill_null(batch[Source.RECOMMENDATION], False)
    if calibration is not None:
        batch = _with_thetas(batch, Calibration(**calibration), p1_proposed, p2_proposed)
    p1_above = pc.fill_null(pc.greater(batch["reformulation_theta"], alpha), False)
    p2_above = pc.fill_null(pc.greater(batch["recommendation_theta"], alpha), False)
    if gate == "discriminator":
        gate_pass = pc.fill_null(pc.greater_equal(batch["gate_score"], gate_threshold), False)
    else:  # "lexical" was applied while mining; "none" passes everything
        gate_pass = p1_proposed
    batch = batch.append_column("gate_pass", pc.and_(p1_proposed, gate_pass))
    batch = batch.append_column("reformulation_kept", pc.and_(pc.and_(p1_proposed, gate_pass), p1_above))
    batch = batch.append_column("recommendation_kept", pc.and_(p2_proposed, p2_above))
    return batch.select(CANDIDATES_SCHEMA.names).cast(CANDIDATES_SCHEMA)


def _with_thetas(batch: pa.Table, cal: Calibration, p1: pa.Array, p2: pa.Array) -> pa.Table:
    """Raw scores in ``score`` -> raw_score, each source's theta where it proposed the pair, and score = the higher."""
    raw = batch["score"]
    valid = pc.is_valid(raw).to_numpy(zero_copy_only=False)
    values = pc.fill_null(raw, 0.0).to_numpy(zero_copy_only=False)
    thetas = {}
    for name, proposed in ((Source.REFORMULATION, p1), (Source.RECOMMENDATION, p2)):
        ok = valid & proposed.to_numpy(zero_copy_only=False)
        thetas[name] = np.where(ok, cal.theta(values, name), np.nan).astype(np.float32)
    best = np.fmax(thetas[Source.REFORMULATION], thetas[Source.RECOMMENDATION])
    batch = batch.set_column(batch.column_names.index("score"), "score", pa.array(best, mask=np.isnan(best)))
    batch = batch.append_column("raw_score", raw)
    for name, theta in thetas.items():
        batch = batch.append_column(f"{name}_theta", pa.array(theta, pa.float32(), mask=np.isnan(theta)))
    return batch


def to_samples(batch: pa.Table, levels: dict[str, int]) -> pa.Table:
    """Candidates -> SAMPLES_SCHEMA: the highest level per (query, video); pairs with no level are dropped."""
    log_level = batch["log_level"].to_numpy(zero_copy_only=False)
    log_level = np.where(batch["log_level"].is_null().to_numpy(zero_copy_only=False), -1, log_level).astype(np.int16)
    log_source = batch["log_source"].to_numpy(zero_copy_only=False)
    rank = SOURCE_RANK  # HLA's one tie rule (crops_ray.hla.keep_highest): the log before the perspectives
    best_level = log_level.copy()
    best_rank = np.array([rank.get(s, len(rank)) if s is not None else len(rank) for s in log_source])
    best_source = log_source.astype(object)
    for source in GATED_SOURCES:
        mined = batch[f"{source}_kept"].to_numpy(zero_copy_only=False)
        lv, rk = levels[source], rank[source]
        better = mined & ((lv > best_level) | ((lv == best_level) & (rk < best_rank)))
        best_level = np.where(better, lv, best_level)
        best_rank = np.where(better, rk, best_rank)
        best_source = np.where(better, source, best_source)
    keep = best_level >= 0
    idx = pa.array(np.flatnonzero(keep))
    return pa.table(
        {
            "query": batch["query"].take(idx),
            "video_id": batch["video_id"].take(idx),
            "text": batch["text"].take(idx),
            "level": pa.array(best_level[keep].astype(np.int8), pa.int8()),
            "source": pa.array(best_source[keep].tolist(), pa.string()),
            "score": batch["score"].take(idx),
        },
        schema=SAMPLES_SCHEMA,
    )


def llm_samples(batch: pa.Table, level: int) -> pa.Table:
    """P3's kept descriptions (``OUT/llm_descriptions/``) as samples at ``level`` (source ``llm``)."""
    kept = batch.filter(pc.fill_null(batch["candidate"], False))
    return pa.table(
        {
            "query": kept["query"],
            "video_id": kept["video_id"],
            "text": kept["text"],
            "level": pa.array([level] * kept.num_rows, pa.int8()),
            "source": pa.array([Source.LLM] * kept.num_rows, pa.string()),
            "score": kept["score"],
        },
        schema=SAMPLES_SCHEMA,
    )
