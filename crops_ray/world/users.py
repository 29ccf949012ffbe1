"""The users: their interests, what a session is about, the query they type, whether they click what they
are shown, and the query they reformulate to. The logged sessions (:mod:`crops_ray.world.sessions`) and the
online A/B test (:mod:`crops_ray.world.online`) both call these, so both meet the same users acting alike.

- **Users** with a primary and secondary interests; minority senses have real demand (``minority_demand``).
- **Intents and queries.** A session is about a (topic, subtopic, angle), subtopic and angle by the catalog's
  Zipf popularity (the long tail of queries, :mod:`crops_ray.world.catalog`); the query typed for it is as
  specific as ``sense_query_mix`` / ``topic_query_mix`` say.
- **Sparse, position-biased clicks.** A request shows ``exposed_range`` results (4-10: a phone screen of the
  two-column feed, then a short scroll); a user examines rank i with probability ``1 / (i + 1) ** position_bias``
  (the rank^-1 examination curve of eye-tracking and click-model studies: Joachims et al. 2005, Craswell et al.
  2008) and clicks by how well the video fits the intent (``click_attraction``: exact angle > subtopic > topic).
  Playing long (the online A/B test's long-play rate) follows the same fit (``long_play``).
- **Reformulation**: after an unsatisfying request, a more specific query (its timing, topic switches and late
  follow-ups: :mod:`crops_ray.world.sessions`).

Determinism: each user's interests come from ``SeedSequence([seed, 2, user])``, whatever shard or simulation
asks, so the online A/B test meets the same users.
"""

from __future__ import annotations

import numpy as np

from crops_ray.world.catalog import Catalog
from crops_ray.world.config import WorldConfig


def fit_level(cat: Catalog, videos: np.ndarray, intent: tuple[int, int, int]) -> np.ndarray:
    """How well each video fits an intent (topic, subtopic, angle): 0 exact, 1 subtopic, 2 topic, 3 none."""
    ti, sub, a = intent
    mine = cat.topic[videos] == ti
    same_sub = mine & (cat.subtopic[videos] == sub)
    return np.where(same_sub & (cat.angle[videos] == a), 0, np.where(same_sub, 1, np.where(mine, 2, 3)))


def click_probability(cat: Catalog, cfg: WorldConfig, exposed: np.ndarray, intent: tuple[int, int, int]) -> np.ndarray:
    attraction = np.asarray(cfg.click_attraction)[fit_level(cat, exposed, intent)]
    examination = 1.0 / (1.0 + np.arange(len(exposed))) ** cfg.position_bias
    return attraction * examination


def user_interests(cfg: WorldConfig, user: int, weights: np.ndarray) -> np.ndarray:
    """A user's interests (primary first), from the user's own seed: the same users in every simulation."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2, user]))
    return rng.choice(len(weights), size=1 + cfg.secondary_interests, replace=False, p=weights)


def choose_interest(rng, interests: np.ndarray, cfg: WorldConfig) -> int:
    if rng.random() < cfg.primary_interest_share or len(interests) == 1:
        return int(interests[0])
    return int(interests[1 + rng.integers(len(interests) - 1)])


def choose_intent(cat: Catalog, rng, ti: int) -> tuple[int, int, int]:
    """(topic, subtopic, angle) a session is about: subtopic and angle by their Zipf popularity."""
    sub = int(rng.choice(8, p=cat.subtopic_p[ti]))
    return ti, sub, int(rng.choice(len(cat.angle_p), p=cat.angle_p))


def query_for(cat: Catalog, cfg: WorldConfig, rng, intent: tuple[int, int, int], specific: bool = False) -> int:
    """The query a user types for an intent: as specific as the query mix says (``specific``: no bare word)."""
    ti, sub, a = intent
    word = cat.topic_word[ti]
    if word:
        mix = np.asarray(cfg.sense_query_mix, dtype=float)
        if specific:
            mix[:2] = 0
        choice = int(rng.choice(4, p=mix / mix.sum()))
        if choice == 0:
            return cat.word_query[word]
        if choice == 1:
            return cat.sense_query[ti]
        return cat.subtopic_queries[(ti, sub)] if choice == 2 else cat.tail_queries[(ti, sub, a)]
    mix = np.asarray(cfg.topic_query_mix, dtype=float)
    return cat.subtopic_queries[(ti, sub)] if rng.random() < mix[0] / mix.sum() else cat.tail_queries[(ti, sub, a)]


def reformulation(cat: Catalog, rng, qi: int, intent: tuple[int, int, int]) -> int:
    """The more specific query an unsatisfied user types next (a tail query falls back to its subtopic)."""
    ti, sub, a = intent
    kind = cat.queries[qi]["kind"]
    if kind == "ambiguous":
        return cat.sense_query[ti] if rng.random() < 0.3 else cat.subtopic_queries[(ti, sub)]
    if kind == "sense":
        return cat.subtopic_queries[(ti, sub)]
    if kind == "subtopic":
        return cat.tail_queries[(ti, sub, a)]
    return cat.subtopic_queries[(ti, sub)]


def interest_weights(cat: Catalog, cfg: WorldConfig) -> np.ndarray:
    w = np.array(
        [
            (1.0 if dom else cfg.minority_demand)
            if word
            else (cfg.distractor_demand if key.endswith("/distractor") else 1.0)
            for key, word, dom in zip(cat.topic_keys, cat.topic_word, cat.topic_dominant)
        ]
    )
    return w / w.sum()
