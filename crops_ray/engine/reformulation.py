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
from dataclasses import dataclass

import numpy as np
import pandas as pd

GATES = ("discriminator", "lexical", "none")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
STOPWORDS = frozenset("a an and are at by for from how in is of on or the to vs what when where which who why with".split())


@dataclass
class ReformulationConfig:
    window_s: int = 90  # the paper's window between the original query and its reformulation
    gate: str = "discriminator"
    gate_threshold: float = 0.35  # raw discriminator similarity (cosine for the bi-encoder) of the two queries
    lexical_threshold: float = 0.3  # share of the shorter query's content words found in the other
    max_followups: int = 5  # later requests per original request considered (nearest in time first)

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise ValueError(f"reformulation window_s must be positive, got {self.window_s}")
        if self.gate not in GATES:
            raise ValueError(f"reformulation gate {self.gate!r} is not one of {GATES}")
        if self.max_followups < 1:
            raise ValueError(f"reformulation max_followups must be >= 1, got {self.max_followups}")


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


def reformulation_candidates(rows: pd.DataFrame, cfg: ReformulationConfig) -> pd.DataFrame:
    """Candidates from one user's (or several users') search rows.

    ``rows``: request_id, user_id, query, ts, video_id, stage (one row per request and candidate video).
    Returns one row per (original request, reformulation, clicked video): user_id, query (the original),
    video_id, reformulated_query, offset_s (seconds between the two requests).
    """
    empty = pd.DataFrame({c: pd.Series(dtype="int64" if c == "offset_s" else "object") for c in CANDIDATE_COLUMNS})
    if rows.empty:
        return empty
    requests = rows.drop_duplicates("request_id")[["user_id", "request_id", "query", "ts"]]
    requests = requests.sort_values(["user_id", "ts", "request_id"], kind="stable").reset_index(drop=True)
    clicked = rows[rows["stage"] == "clicked"]
    if clicked.empty:
        return empty
    clicks_of = clicked.groupby("request_id", sort=False)["video_id"].agg(lambda s: sorted(set(s))).to_dict()
    users = requests["user_id"].to_numpy()
    ts = requests["ts"].to_numpy(dtype=np.int64)
    norm = [normalise_query(q) for q in requests["query"]]
    out = []
    # Per user the requests are contiguous and time-ordered: a window is a searchsorted range.
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    for start, stop in zip(bounds[:-1], bounds[1:]):
        t = ts[start:stop]
        upper = np.searchsorted(t, t + cfg.window_s, side="right")
        for i in range(stop - start):
            taken = 0
            for j in range(i + 1, upper[i]):
                a, b = start + i, start + j
                if norm[a] == norm[b]:
                    continue  # the same query again is a retry, not a reformulation
                taken += 1
                if taken > cfg.max_followups:
                    break
                if cfg.gate == "lexical" and lexical_similarity(norm[a], norm[b]) < cfg.lexical_threshold:
                    continue
                for video in clicks_of.get(requests.at[b, "request_id"], ()):
                    out.append((users[a], requests.at[a, "query"], video, requests.at[b, "query"], int(ts[b] - ts[a])))
    if not out:
        return empty
    return pd.DataFrame(out, columns=list(CANDIDATE_COLUMNS))
