"""Query buckets by training-period frequency: head / torso / tail / unseen. One rule, used everywhere.

A query's bucket is the number of search requests that typed it in the training log (the logs the methods
learn from): ``unseen`` (0: no method saw it), ``tail`` (1-2: at most a couple of clicks to learn from),
``torso`` (3 up to ``HEAD_MIN_REQUESTS`` - 1) and ``head`` (``HEAD_MIN_REQUESTS`` or more). The paper's claim
is that P1 and P3 help most where the log has few or no positives, so every metric is reported per bucket.
"""

from __future__ import annotations

import numpy as np

BUCKETS = ("head", "torso", "tail", "unseen")
TAIL_MAX_REQUESTS = 2
HEAD_MIN_REQUESTS = 20


def bucket_of(requests) -> np.ndarray:
    """Bucket names for an array of training-period request counts."""
    n = np.asarray(requests)
    return np.where(
        n == 0, "unseen", np.where(n <= TAIL_MAX_REQUESTS, "tail", np.where(n < HEAD_MIN_REQUESTS, "torso", "head"))
    )


def query_buckets(logs: str, queries: list[str]):
    """A pandas frame (query, train_requests, bucket) for ``queries``, counted from ``logs``' search log."""
    import pandas as pd

    from crops_ray import schema as S
    from crops_ray import storage

    log = storage.read_table(S.table_files(logs, "search_log"), columns=["request_id", "query"])
    counts = log.group_by("query").aggregate([("request_id", "count_distinct")]).to_pandas()
    counts = counts.rename(columns={"request_id_count_distinct": "train_requests"}).set_index("query")["train_requests"]
    n = np.array([int(counts.get(q, 0)) for q in queries])
    return pd.DataFrame({"query": queries, "train_requests": n, "bucket": bucket_of(n)})
