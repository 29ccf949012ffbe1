"""P1, query-level positives: what a user clicked after reformulating is a candidate for the ORIGINAL query.

Per user, requests are ordered by time. A later request within ``window_s`` (the paper's 90 s) whose query text
differs is a reformulation of the earlier one; the videos clicked under it are candidates for the earlier query.
A similarity gate drops follow-ups that are not reformulations (the user moved to another interest):

- ``gate="discriminator"``: the discriminator's raw similarity of the two queries must reach
  ``gate_threshold`` (applied where the discriminator runs, see :mod:`crops_ray.engine.build`);
- ``gate="lexical"``: the two queries must share at least ``lexical_threshold`` of the shorter one's words
  (applied here, no model);
- ``gate="none"``.

Then every candidate must pass theta(original query, video) > alpha. This module is the per-user logic; it runs
inside Ray Data's ``groupby("user_id").map_groups`` (:mod:`crops_ray.engine.users`).
"""

from __future__ import annotations

import re

import pandas as pd

from crops_ray.config import config
from crops_ray.sources import Source

GATES = ("discriminator", "lexical", "none")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
STOPWORDS = frozenset(
    "a an and are at by for from how in is of on or the to vs what when where which who why with".split()
)


@config
class ReformulationConfig:
    window_s: int = 90  # the paper's window between the original query and its reformulation
    gate: str = "discriminator"
    gate_threshold: float = 0.3  # raw discriminator similarity (cosine for the bi-encoder) of the two queries
    lexical_threshold: float = 0.3  # share of the shorter query's content words found in the other
    max_followups: int = 5  # later requests per original request considered (nearest in time first)
    # Later requests looked at per request, retries of the same query included: a crawler or a shared account
    # repeating one query thousands of times inside the window would otherwise cost time quadratic in its
    # requests. A person issues a handful of requests in 90 s, so no real session reaches it.
    max_scan: int = 50

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise ValueError(f"reformulation window_s must be positive, got {self.window_s}")
        if self.gate not in GATES:
            raise ValueError(f"reformulation gate {self.gate!r} is not one of {GATES}")
        if self.max_followups < 1:
            raise ValueError(f"reformulation max_followups must be >= 1, got {self.max_followups}")
        if self.max_scan < self.max_followups:
            raise ValueError(
                f"reformulation max_scan ({self.max_scan}) must be >= max_followups ({self.max_followups})"
            )


def normalise_query(q: str) -> str:
    return " ".join(q.casefold().split())


def content_words(q: str) -> frozenset[str]:
    words = [w for w in _WORD.findall(q.casefold())]
    kept = [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words if w not in STOPWORDS]
    return frozenset(kept or words)


def lexical_similarity(a: str, b: str) -> float:
    """Overlap coefficient of content words (plural 's' folded): 1.0 when one query's words all occur in the other."""
    wa, wb = content_words(a), content_words(b)
    if not wa or not wb:
        return 0.0
    return len(wa & wb) / min(len(wa), len(wb))


CANDIDATE_COLUMNS = ("user_id", "query", "video_id", "reformulated_query", "offset_s")


def _column(rows, name: str) -> list:
    """A column as a Python list, from a pandas frame or a dict of numpy arrays (Ray Data's batch formats)."""
    col = rows[name]
    return col.tolist() if hasattr(col, "tolist") else list(col)


def reformulation_candidates(rows, cfg: ReformulationConfig) -> pd.DataFrame:
    """Candidates from one user's (or several users') search rows.

    ``rows``: request_id, user_id, query, ts, video_id, stage (one row per request and candidate video; a
    pandas frame or a dict of arrays). Returns one row per (original request, reformulation, clicked video):
    user_id, query (the original), video_id, reformulated_query, offset_s (seconds between the two requests).
    Plain Python over a user's few requests: this runs once per user inside map_groups.
    """
    requests: dict[str, tuple] = {}  # request_id -> (user, ts, query)
    clicks: dict[str, list] = {}
    if len(rows["request_id"]):
        for rid, user, query, ts, video, stage in zip(
            *(_column(rows, c) for c in ("request_id", "user_id", "query", "ts", "video_id", "stage"))
        ):
            if rid not in requests:
                requests[rid] = (user, int(ts), query)
            if stage == Source.CLICKED and video not in clicks.setdefault(rid, []):
                clicks[rid].append(video)
    out = []
    if any(clicks.values()):
        order = sorted(requests, key=lambda r: (requests[r][0], requests[r][1], r))
        norm = {r: normalise_query(requests[r][2]) for r in order}
        for i, a in enumerate(order):
            user, ts, query = requests[a]
            taken = 0
            for b in order[i + 1 : i + 1 + cfg.max_scan]:
                user_b, ts_b, query_b = requests[b]
                if user_b != user or ts_b - ts > cfg.window_s:
                    break
                if norm[a] == norm[b]:
                    continue  # the same query again is a retry, not a reformulation
                taken += 1
                if taken > cfg.max_followups:
                    break
                if cfg.gate == "lexical" and lexical_similarity(norm[a], norm[b]) < cfg.lexical_threshold:
                    continue
                out.extend((user, query, video, query_b, ts_b - ts) for video in sorted(clicks.get(b, ())))
    frame = pd.DataFrame(out, columns=list(CANDIDATE_COLUMNS))
    return frame.astype({"offset_s": "int64"})
