"""P2, system-level positives: what the users who issued a query engaged with in the recommendation feed.

For each query, the users who issued it; for each of them, their rec-feed interactions within a window around
the time they issued it (``before_s`` earlier to ``after_s`` later), at most ``per_user`` per (user, query),
nearest in time first. Every candidate must then pass theta(query, video) > alpha. This module is the per-user
logic; it runs inside Ray Data's ``groupby("user_id").map_groups`` (:mod:`crops_ray.engine.users`).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left

import pandas as pd

from crops_ray.config import config

DAY_S = 86_400


@config
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
        if events:
            nearest = _nearest_videos(sorted(issued[(user, query)]), times_of[user], events, cfg)
            out.extend((user, query, video, off) for video, off in nearest)
    return pd.DataFrame(out, columns=list(CANDIDATE_COLUMNS)).astype({"offset_s": "int64"})


def _nearest_videos(issued: list, times: list, events: list, cfg: RecommendationConfig) -> list:
    """The ``per_user`` videos nearest in time to any of the requests ``issued`` (sorted), as (video, offset).

    A feed event's offset is taken from the request just before it (offset >= 0, at most ``after_s``) or the one
    just after it (offset < 0, at least ``-before_s``): every other request is further away on the same side. So
    the events between two consecutive requests are read from both ends inward, nearest first, through a heap of
    fronts (one forward from each request, one backward from it), and each event is read at most once. Reading
    stops once ``per_user`` videos are found and nothing unread is as near: the cost is the requests plus the
    events read (``per_user`` plus a video's repeats), never requests x feed events, for a crawler too.
    Order: the smaller offset magnitude, then the negative offset (feed before the query), then the video id.
    """
    starts = [bisect_left(times, t) for t in issued]
    gaps = [[0, starts[0] - 1]]  # gaps[g] = [lo, hi], the unread events between request g - 1 and request g
    gaps += [[lo, (starts[i + 1] if i + 1 < len(issued) else len(times)) - 1] for i, lo in enumerate(starts)]
    heap: list = []

    def push(t: int, gap: int, step: int) -> None:  # the front's next unread event, if it is inside the window
        lo, hi = gaps[gap]
        if lo <= hi:
            k = lo if step > 0 else hi
            off = times[k] - t
            if (off <= cfg.after_s) if step > 0 else (-off <= cfg.before_s):
                heapq.heappush(heap, (abs(off), off, events[k][1], k, step, gap, t))

    for i, t in enumerate(issued):
        push(t, i, -1)  # backward from t into the gap before it
        push(t, i + 1, 1)  # forward from t into the gap after it
    best: dict[str, tuple] = {}
    enough = None  # (abs offset, offset) at which per_user videos were found
    while heap and (enough is None or heap[0][:2] <= enough):
        dist, off, video, k, step, gap, t = heapq.heappop(heap)
        lo, hi = gaps[gap]
        if k != (lo if step > 0 else hi) or lo > hi:
            continue  # the other end of this gap has read it
        gaps[gap][0 if step > 0 else 1] += step
        best.setdefault(video, (dist, off))
        if enough is None and len(best) == cfg.per_user:
            enough = (dist, off)
        push(t, gap, step)
    nearest = sorted(best.items(), key=lambda kv: (kv[1], kv[0]))[: cfg.per_user]
    return [(video, off) for video, (_, off) in nearest]
