"""P2, system-level positives: what the users who issued a query engaged with in the recommendation feed.

For each query, the users who issued it; for each of them, their rec-feed interactions within a window around
the time they issued it (``before_s`` earlier to ``after_s`` later), at most ``per_user`` per (user, query),
nearest in time first. Every candidate must then pass theta(query, video) > alpha. This module is the per-user
logic; it runs inside Ray Data's ``groupby("user_id").map_groups`` (:mod:`crops_ray.engine.users`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

import pandas as pd

DAY_S = 86_400


@dataclass
class RecommendationConfig:
    before_s: int = DAY_S  # feed interactions up to this long before the query ...
    after_s: int = DAY_S  # ... and this long after it
    per_user: int = 100  # the paper's cap: interactions per user (and query), nearest in time first
    actions: tuple = ()  # keep only these rec-log actions (e.g. ("like", "share")); empty: all

    def __post_init__(self) -> None:
        if self.before_s < 0 or self.after_s < 0:
            raise ValueError(
                f"recommendation window must not be negative (before_s={self.before_s}, after_s={self.after_s})"
            )
        if self.per_user < 1:
            raise ValueError(f"recommendation per_user must be >= 1, got {self.per_user}")


CANDIDATE_COLUMNS = ("user_id", "query", "video_id", "offset_s")


def _column(rows, name: str) -> list:
    col = rows[name]
    return col.tolist() if hasattr(col, "tolist") else list(col)


def recommendation_candidates(searches, feed, cfg: RecommendationConfig) -> pd.DataFrame:
    """Candidates from one user's (or several users') searches and feed.

    ``searches``: user_id, query, ts (one row per request, duplicates allowed). ``feed``: user_id, video_id, ts
    (and ``action`` when ``cfg.actions`` filters on it); pandas frames or dicts of arrays. Returns user_id,
    query, video_id, offset_s (feed time minus the nearest time the user issued the query), one row per
    (user, query, video), nearest first, at most ``per_user`` per (user, query).
    """
    issued: dict[tuple, set] = {}
    if len(searches["user_id"]):
        for user, query, ts in zip(*(_column(searches, c) for c in ("user_id", "query", "ts"))):
            issued.setdefault((user, query), set()).add(int(ts))
    by_user: dict[str, list] = {}
    if issued and len(feed["user_id"]):
        actions = _column(feed, "action") if cfg.actions else None
        for i, (user, video, ts) in enumerate(zip(*(_column(feed, c) for c in ("user_id", "video_id", "ts")))):
            if actions is None or actions[i] in cfg.actions:
                by_user.setdefault(user, []).append((int(ts), video))
    out = []
    times_of: dict[str, list] = {}  # once per user, not per (user, query): a user with many queries stays linear
    for user in by_user:
        by_user[user].sort()
        times_of[user] = [t for t, _ in by_user[user]]
    for user, query in sorted(issued):
        events = by_user.get(user)
        if not events:
            continue
        times = times_of[user]
        best: dict[str, int] = {}  # video -> signed offset with the smallest magnitude
        for q_ts in issued[(user, query)]:
            for k in range(bisect_left(times, q_ts - cfg.before_s), bisect_right(times, q_ts + cfg.after_s)):
                off, video = events[k][0] - q_ts, events[k][1]
                if video not in best or (abs(off), off) < (abs(best[video]), best[video]):
                    best[video] = off
        nearest = sorted(best.items(), key=lambda kv: (abs(kv[1]), kv[1], kv[0]))[: cfg.per_user]
        out.extend((user, query, video, off) for video, off in nearest)
    return pd.DataFrame(out, columns=list(CANDIDATE_COLUMNS)).astype({"offset_s": "int64"})
