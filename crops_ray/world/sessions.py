"""The logged platform: the incumbent engine ranks each request's candidates, users click and reformulate
(:mod:`crops_ray.world.users`), and every request's funnel goes to the search log, the recommendation feed to
the rec log. :func:`generate_shard` simulates one shard of users over both periods.

- **The logging engine** (the incumbent) scores its candidates by relevance and popularity and, for a bare
  ambiguous word, adds ``exposure_bias`` to the dominant sense: the filter bubble. It logs every request's
  funnel: ``exposed``, ``ranked`` (the next ``n_ranked``) and a sample of ``filtered``.
- **Reformulation** within 90 s after an unsatisfying request (no click), to a more specific query; topic
  switches inside the window (noise for P1) and follow-ups after it.
- **Recommendation feed**: interactions with each user's interests by the fresher popularity, including
  videos search never exposes, plus exploration noise.

Determinism: a shard's sessions come from ``SeedSequence([seed, shard])``, so the same seed gives the same bytes
whether shards run in-process or as Ray tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crops_ray import schema as S
from crops_ray.sources import Source
from crops_ray.world.catalog import Catalog
from crops_ray.world.config import DAY, T0, WorldConfig
from crops_ray.world.users import (
    choose_intent,
    choose_interest,
    click_probability,
    query_for,
    reformulation,
    user_interests,
)

ACTIONS = ("watch", "like", "share")


@dataclass
class _Shard:
    search: dict
    rec: dict
    ct: list
    qr: list
    stats: dict
    query_counts: np.ndarray  # [queries, 3]: training requests, training clicks, evaluation requests


def engine_candidates(cat: Catalog, qi: int) -> tuple[np.ndarray, np.ndarray]:
    """The incumbent's retrieval: (candidate video indices, their grades)."""
    return cat.candidates[qi], cat.grades[qi]


def rank(
    cat: Catalog, cfg: WorldConfig, qi: int, cand: np.ndarray, grade: np.ndarray, noise: np.ndarray, period: int
) -> np.ndarray:
    """The platform's ranker over any candidate set: relevance, popularity, noise and the exposure bias.

    ``noise``: one standard normal per candidate. Returns the candidates in ranked order (pre-ranking pool).
    """
    score = cfg.grade_weight * grade + cat.log_pop[period, cand] + cfg.engine_noise * noise
    if cat.queries[qi]["kind"] == "ambiguous":
        score = score + cfg.exposure_bias * cat.video_dominant[cand]
    return cand[np.argsort(-score, kind="stable")][: cfg.pre_ranking_pool]


def generate_shard(  # long: one shard's users draw from one generator in a fixed order (the world's seed)
    cat: Catalog, cfg: WorldConfig, shard: int, user_range: tuple[int, int], interest_weights: np.ndarray
) -> _Shard:
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, shard]))
    search = {k: [] for k in S.SEARCH_LOG_SCHEMA.names}
    rec = {k: [] for k in S.REC_LOG_SCHEMA.names}
    ct, qr = [], []
    counts = np.zeros((len(cat.queries), 3), dtype=np.int64)
    stats = dict(
        requests=0,
        eval_requests=0,
        clicks=0,
        shown=0,  # results shown to the searcher
        reformulations=0,
        topic_switches=0,
        late_followups=0,
        ambiguous_requests=0,
        ambiguous_intent_unexposed=0,
        rec_events=0,
    )
    request_counter = 0

    def request(uid: str, qi: int, ts: int, intent: tuple[int, int, int], period: int) -> np.ndarray:
        nonlocal request_counter
        cand, grade = engine_candidates(cat, qi)
        order = rank(cat, cfg, qi, cand, grade, rng.standard_normal(len(cand)), period)
        n_exposed = int(rng.integers(cfg.exposed_range[0], cfg.exposed_range[1] + 1))
        exposed, ranked = order[:n_exposed], order[n_exposed : n_exposed + cfg.n_ranked]
        dropped = order[n_exposed + cfg.n_ranked :]
        filtered = (
            rng.choice(dropped, size=min(cfg.n_filtered, len(dropped)), replace=False) if len(dropped) else dropped
        )
        clicked = rng.random(len(exposed)) < click_probability(cat, cfg, exposed, intent)
        rid = f"r{shard:04d}-{request_counter:08d}"
        request_counter += 1
        if period == 0:
            stats["requests"] += 1
            stats["shown"] += len(exposed)
            counts[qi, 0] += 1
            counts[qi, 1] += int(clicked.sum())
            for stage, vids in (
                (Source.CLICKED, exposed[clicked]),
                (Source.EXPOSED, exposed[~clicked]),
                (Source.RANKED, ranked),
                (Source.FILTERED, filtered),
            ):
                for v in vids:
                    search["request_id"].append(rid)
                    search["user_id"].append(uid)
                    search["query"].append(cat.queries[qi]["query"])
                    search["ts"].append(ts)
                    search["video_id"].append(cat.video_ids[v])
                    search["stage"].append(stage)
            stats["clicks"] += int(clicked.sum())
        else:
            stats["eval_requests"] += 1
            counts[qi, 2] += 1
            ct.extend((cat.queries[qi]["query"], cat.video_ids[v]) for v in exposed[clicked])
        if cat.queries[qi]["kind"] == "ambiguous" and period == 0:
            stats["ambiguous_requests"] += 1
            stats["ambiguous_intent_unexposed"] += int(not np.any(cat.topic[exposed] == intent[0]))
        return exposed[clicked]

    for u in range(*user_range):
        uid = f"u{u:07d}"
        interests = user_interests(cfg, u, interest_weights)
        for period, (start, days, mean) in enumerate(
            (
                (T0, cfg.train_days, cfg.train_sessions_per_user),
                (T0 + cfg.train_days * DAY, cfg.eval_days, cfg.eval_sessions_per_user),
            )
        ):
            for _ in range(rng.poisson(mean)):
                ts = int(start + rng.integers(days * DAY - 3600))
                intent = choose_intent(cat, rng, choose_interest(rng, interests, cfg))
                qi = query_for(cat, cfg, rng, intent)
                clicked = request(uid, qi, ts, intent, period)
                if not len(clicked) and rng.random() < cfg.reformulate_rate:
                    q2 = reformulation(cat, rng, qi, intent)
                    clicked2 = request(uid, q2, ts + int(rng.integers(*cfg.reformulation_delay_s)), intent, period)
                    stats["reformulations"] += period == 0
                    if period == 1:
                        qr.extend((cat.queries[qi]["query"], cat.video_ids[v]) for v in clicked2)
                    continue
                r = rng.random()
                switch = r < cfg.topic_switch_rate  # another interest within the window, else the same one after it
                if switch or r < cfg.topic_switch_rate + cfg.late_followup_rate:
                    ti2 = intent[0]
                    if switch:  # the user's next interest
                        ti2 = int(interests[(list(interests).index(ti2) + 1) % len(interests)])
                    intent2 = choose_intent(cat, rng, ti2)
                    delay = cfg.reformulation_delay_s if switch else cfg.late_followup_delay_s
                    q2 = query_for(cat, cfg, rng, intent2, specific=True)
                    request(uid, q2, ts + int(rng.integers(*delay)), intent2, period)
                    stats["topic_switches" if switch else "late_followups"] += period == 0
        # Recommendation feed (training period): each user's interests by the fresher rec popularity.
        for _ in range(rng.poisson(cfg.rec_per_user)):
            if rng.random() < cfg.rec_noise:
                v = int(rng.integers(len(cat.video_ids)))
            else:
                ti = int(interests[0]) if rng.random() < cfg.rec_primary_share else choose_interest(rng, interests, cfg)
                pool = cat.topic_videos[ti]
                w = np.exp(cat.log_pop[2, pool])
                v = int(pool[np.searchsorted(np.cumsum(w), rng.random() * w.sum())])
            rec["user_id"].append(uid)
            rec["video_id"].append(cat.video_ids[v])
            rec["ts"].append(int(T0 + rng.integers(cfg.train_days * DAY)))
            rec["action"].append(ACTIONS[int(rng.choice(3, p=[0.7, 0.2, 0.1]))])
            stats["rec_events"] += 1
    return _Shard(search, rec, ct, qr, stats, counts)
