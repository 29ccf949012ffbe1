"""P2, system-level positives: what the users who issued a query engaged with in the recommendation feed.

For each query, the users who issued it; for each of them, their rec-feed interactions within a window around
the time they issued it (``before_s`` earlier to ``after_s`` later), at most ``per_user`` per (user, query),
nearest in time first. Every candidate must then pass theta(query, video) > alpha. This module is the per-user
logic; it runs inside Ray Data's ``groupby("user_id").map_groups`` (:mod:`crops_ray.engine.users`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DAY_S = 86_400


@dataclass
class RecommendationConfig:
    before_s: int = 3 * DAY_S  # feed interactions up to this long before the query ...
    after_s: int = 3 * DAY_S  # ... and this long after it
    per_user: int = 100  # the paper's cap: interactions per user (and query), nearest in time first
    actions: tuple = ()  # keep only these rec-log actions (e.g. ("like", "share")); empty: all

    def __post_init__(self) -> None:
        if self.before_s < 0 or self.after_s < 0:
            raise ValueError(f"recommendation window must not be negative (before_s={self.before_s}, after_s={self.after_s})")
        if self.per_user < 1:
            raise ValueError(f"recommendation per_user must be >= 1, got {self.per_user}")


CANDIDATE_COLUMNS = ("user_id", "query", "video_id", "offset_s")


def recommendation_candidates(searches: pd.DataFrame, feed: pd.DataFrame, cfg: RecommendationConfig) -> pd.DataFrame:
    """Candidates from one user's (or several users') searches and feed.

    ``searches``: user_id, query, ts (one row per request, duplicates allowed). ``feed``: user_id, video_id, ts
    (and ``action`` when ``cfg.actions`` filters on it). Returns user_id, query, video_id, offset_s (feed time
    minus the nearest issue time of that query), one row per (user, query, video).
    """
    empty = pd.DataFrame({c: pd.Series(dtype="int64" if c == "offset_s" else "object") for c in CANDIDATE_COLUMNS})
    if searches.empty or feed.empty:
        return empty
    if cfg.actions and "action" in feed:
        feed = feed[feed["action"].isin(cfg.actions)]
    issued = searches[["user_id", "query", "ts"]].drop_duplicates()
    feed = feed[["user_id", "video_id", "ts"]].sort_values(["user_id", "ts", "video_id"], kind="stable")
    out = []
    feed_by_user = {u: (g["ts"].to_numpy(dtype=np.int64), g["video_id"].to_numpy()) for u, g in feed.groupby("user_id", sort=False)}
    for (user, query), g in issued.groupby(["user_id", "query"], sort=True):
        if user not in feed_by_user:
            continue
        fts, fvid = feed_by_user[user]
        best: dict[str, int] = {}  # video -> signed offset with the smallest magnitude
        for q_ts in g["ts"].to_numpy(dtype=np.int64):
            lo = np.searchsorted(fts, q_ts - cfg.before_s, side="left")
            hi = np.searchsorted(fts, q_ts + cfg.after_s, side="right")
            for k in range(lo, hi):
                off = int(fts[k] - q_ts)
                v = fvid[k]
                if v not in best or (abs(off), off) < (abs(best[v]), best[v]):
                    best[v] = off
        nearest = sorted(best.items(), key=lambda kv: (abs(kv[1]), kv[1], kv[0]))[: cfg.per_user]
        out.extend((user, query, v, off) for v, off in nearest)
    if not out:
        return empty
    return pd.DataFrame(out, columns=list(CANDIDATE_COLUMNS))
