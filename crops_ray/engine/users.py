"""Group the logs by user once, and run the per-user miners (P1 reformulation, P2 recommendation) on each user.

Both miners need one user's history in time order, so the search requests and the rec feed are unioned and
shuffled by ``user_id`` in a single Ray Data ``groupby(...).map_groups(...)``: no driver-side loop, and the
same code runs over a handful of shards or thousands. Only what the miners read crosses the shuffle: one row
per request (its query and time) plus the clicked rows, and the feed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crops_ray.engine.recommendation import RecommendationConfig, recommendation_candidates
from crops_ray.engine.reformulation import ReformulationConfig, reformulation_candidates

EVENT_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("log", pa.string()),  # "search" or "rec"
        ("request_id", pa.string()),
        ("query", pa.string()),
        ("ts", pa.int64()),
        ("video_id", pa.string()),
        ("stage", pa.string()),
        ("action", pa.string()),
    ]
)

USER_CANDIDATE_SCHEMA = pa.schema(
    [
        ("source", pa.string()),  # "reformulation" or "recommendation"
        ("user_id", pa.string()),
        ("query", pa.string()),
        ("video_id", pa.string()),
        ("reformulated_query", pa.string()),  # P1 only
        ("offset_s", pa.int64()),  # P1: seconds to the reformulation; P2: feed time minus query time
    ]
)


def search_events(batch: pa.Table, keep_clicks: bool = True) -> pa.Table:
    """One row per request (its first row in this batch) plus every clicked row; the rest stays behind."""
    rid = batch["request_id"].to_numpy(zero_copy_only=False)
    first = ~pd.Series(rid).duplicated().to_numpy()
    keep = first | (pc.equal(batch["stage"], "clicked").to_numpy(zero_copy_only=False) if keep_clicks else False)
    kept = batch.filter(pa.array(keep))
    n = kept.num_rows
    return pa.table(
        {
            "user_id": kept["user_id"],
            "log": pa.array(["search"] * n, pa.string()),
            "request_id": kept["request_id"],
            "query": kept["query"],
            "ts": kept["ts"],
            "video_id": kept["video_id"],
            "stage": kept["stage"],
            "action": pa.nulls(n, pa.string()),
        },
        schema=EVENT_SCHEMA,
    )


def rec_events(batch: pa.Table) -> pa.Table:
    n = batch.num_rows
    action = batch["action"] if "action" in batch.column_names else pa.nulls(n, pa.string())
    return pa.table(
        {
            "user_id": batch["user_id"],
            "log": pa.array(["rec"] * n, pa.string()),
            "request_id": pa.nulls(n, pa.string()),
            "query": pa.nulls(n, pa.string()),
            "ts": batch["ts"],
            "video_id": batch["video_id"],
            "stage": pa.nulls(n, pa.string()),
            "action": pc.cast(action, pa.string()),
        },
        schema=EVENT_SCHEMA,
    )


def mine_user(events: pd.DataFrame, reformulation: ReformulationConfig | None, recommendation: RecommendationConfig | None) -> pa.Table:
    """P1 and P2 candidates of one user (the function works on several users too, for tests)."""
    search = events[events["log"] == "search"]
    parts = []
    if reformulation is not None:
        p1 = reformulation_candidates(search, reformulation)
        parts.append(p1.assign(source="reformulation"))
    if recommendation is not None:
        p2 = recommendation_candidates(search[["user_id", "query", "ts"]], events[events["log"] == "rec"], recommendation)
        parts.append(p2.assign(source="recommendation", reformulated_query=None))
    frames = [p for p in parts if len(p)]
    if not frames:
        return USER_CANDIDATE_SCHEMA.empty_table()
    out = pd.concat(frames, ignore_index=True)
    out["offset_s"] = out["offset_s"].astype(np.int64)
    return pa.Table.from_pandas(out[USER_CANDIDATE_SCHEMA.names], schema=USER_CANDIDATE_SCHEMA, preserve_index=False)


def user_candidates(search, rec, reformulation: ReformulationConfig | None, recommendation: RecommendationConfig | None, partitions: int, num_cpus: float = 0.5):
    """Ray Data: P1/P2 candidate rows (USER_CANDIDATE_SCHEMA) from the search and rec datasets."""
    events = search.map_batches(search_events, batch_format="pyarrow", num_cpus=num_cpus)
    if recommendation is not None:
        events = events.union(rec.map_batches(rec_events, batch_format="pyarrow", num_cpus=num_cpus))
    return events.groupby("user_id", num_partitions=partitions).map_groups(
        mine_user,
        batch_format="pandas",
        fn_kwargs={"reformulation": reformulation, "recommendation": recommendation},
        num_cpus=num_cpus,
    )
