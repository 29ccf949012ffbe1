"""Group the logs by user once, and run the per-user miners (P1 reformulation, P2 recommendation) on each user.

Both miners need one user's history in time order, so the search requests and the rec feed are unioned and
shuffled by user in a single Ray Data ``groupby(...).map_groups(...)``: no driver-side loop, and the same
code runs over a handful of shards or thousands. The key is a hash bucket of ``user_id`` (every row of a
user lands in the same bucket; a bucket holds many users, mined together). Only what the miners read crosses
the shuffle: one row per request (its query and time) plus the clicked rows, and the feed.

One user's whole history meets in one call, so its memory grows with the heaviest user. A user with more log
rows than ``max_user_rows`` (search_log plus rec_log; :func:`heavy_users` finds them in one streamed count
before the shuffle) is left out of P1/P2 mining and counted: at that volume it is a crawler, a monitoring probe
or a shared account, whose reformulations and feed say nothing about one person's intent. Its search rows still
give P0 samples. The default cap, 1,000,000 rows, keeps one mining call under ~100 MB (about 100 bytes per event,
and a user never has more events than rows); the small embedded world's busiest user has 566 rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crops_ray.engine.recommendation import RecommendationConfig, recommendation_candidates
from crops_ray.engine.reformulation import ReformulationConfig, reformulation_candidates
from crops_ray.sources import Source

EVENT_SCHEMA = pa.schema(
    [
        ("bucket", pa.int64()),  # hash of user_id: the shuffle key (see key_buckets)
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


def key_buckets(keys: pa.Array | pa.ChunkedArray, buckets: int) -> pa.Array:
    """A stable bucket (0..buckets-1) per key, the same in every process and run.

    Shuffling by bucket instead of by key keeps every row of a key together while the per-group function runs
    once per bucket (thousands of keys, vectorised) instead of once per key: Ray Data's per-group overhead is
    paid per bucket.
    """
    values = np.asarray(keys.to_pylist() if isinstance(keys, (pa.Array, pa.ChunkedArray)) else keys, dtype=object)
    return pa.array((pd.util.hash_array(values, categorize=False) % np.uint64(buckets)).astype(np.int64))


def _without(batch: pa.Table, skip_users: list[str]) -> pa.Table:
    if not skip_users:
        return batch
    return batch.filter(pc.invert(pc.is_in(batch["user_id"], value_set=pa.array(skip_users, pa.string()))))


def heavy_users(datasets, max_rows: int) -> dict[str, int]:
    """The users with more than ``max_rows`` rows across ``datasets`` (Ray Datasets with a ``user_id`` column).

    One aggregation over the ``user_id`` column only; Ray Data combines the counts inside each block before the
    shuffle, so one row per (user, block) crosses it, and only the users over the cap (at most rows / max_rows
    of them) reach the driver. ``max_rows`` 0 turns the cap off.
    """
    parts = [d.select_columns(["user_id"]) for d in datasets if d is not None]
    if not max_rows or not parts:
        return {}
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]

    def over(batch: pa.Table) -> pa.Table:
        return batch.filter(pc.greater(batch["count()"], max_rows))

    heavy = ds.groupby("user_id").count().map_batches(over, batch_format="pyarrow").take_all()
    return {row["user_id"]: int(row["count()"]) for row in heavy}


def search_events(batch: pa.Table, buckets: int, keep_clicks: bool = True, skip_users=()) -> pa.Table:
    """One row per request (its first row in this batch) plus every clicked row; the rest stays behind.

    Rows of ``skip_users`` (the users over the cap) stay behind too."""
    batch = _without(batch, list(skip_users))
    rid = batch["request_id"].to_numpy(zero_copy_only=False)
    first = ~pd.Series(rid).duplicated().to_numpy()
    keep = first | (pc.equal(batch["stage"], Source.CLICKED).to_numpy(zero_copy_only=False) if keep_clicks else False)
    kept = batch.filter(pa.array(keep))
    n = kept.num_rows
    return pa.table(
        {
            "bucket": key_buckets(kept["user_id"], buckets),
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


def rec_events(batch: pa.Table, buckets: int, skip_users=()) -> pa.Table:
    batch = _without(batch, list(skip_users))
    n = batch.num_rows
    action = batch["action"] if "action" in batch.column_names else pa.nulls(n, pa.string())
    return pa.table(
        {
            "bucket": key_buckets(batch["user_id"], buckets),
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


def mine_user(
    events, reformulation: ReformulationConfig | None, recommendation: RecommendationConfig | None
) -> pa.Table:
    """P1 and P2 candidates of the users in ``events`` (EVENT_SCHEMA columns, a dict of arrays or a frame):
    one bucket of users inside map_groups, or any set of users in a test."""
    is_search = np.asarray(events["log"]) == "search"
    search = {
        c: np.asarray(events[c])[is_search] for c in ("request_id", "user_id", "query", "ts", "video_id", "stage")
    }
    parts = []
    if reformulation is not None:
        parts.append(reformulation_candidates(search, reformulation).assign(source=Source.REFORMULATION))
    if recommendation is not None:
        feed = {c: np.asarray(events[c])[~is_search] for c in ("user_id", "video_id", "ts", "action")}
        parts.append(
            recommendation_candidates(search, feed, recommendation).assign(
                source=Source.RECOMMENDATION, reformulated_query=None
            )
        )
    frames = [p for p in parts if len(p)]
    if not frames:
        return USER_CANDIDATE_SCHEMA.empty_table()
    out = pd.concat(frames, ignore_index=True)
    return pa.Table.from_pandas(out[USER_CANDIDATE_SCHEMA.names], schema=USER_CANDIDATE_SCHEMA, preserve_index=False)


def user_candidates(
    search,
    rec,
    reformulation: ReformulationConfig | None,
    recommendation: RecommendationConfig | None,
    partitions: int,
    buckets: int,
    num_cpus: float = 0.5,
    skip_users=(),
):
    """Ray Data: P1/P2 candidate rows (USER_CANDIDATE_SCHEMA) from the search and rec datasets.

    The shuffle key is the user's bucket (:func:`key_buckets`), so each user's whole history meets in one call.
    ``skip_users``: users left out of mining (:func:`heavy_users`).
    """
    kwargs = {"buckets": buckets, "skip_users": sorted(skip_users)}
    events = search.map_batches(search_events, batch_format="pyarrow", fn_kwargs=kwargs, num_cpus=num_cpus)
    if recommendation is not None:
        events = events.union(rec.map_batches(rec_events, batch_format="pyarrow", fn_kwargs=kwargs, num_cpus=num_cpus))
    return events.groupby("bucket", num_partitions=partitions).map_groups(
        mine_user,
        batch_format="numpy",
        fn_kwargs=dict(reformulation=reformulation, recommendation=recommendation),
        num_cpus=num_cpus,
    )
