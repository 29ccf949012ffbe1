"""The world's settings: :class:`WorldConfig`, the scales (tiny, small, large) and the calendar.

Every mechanism has its knob in :class:`WorldConfig` and stands for a fact about real platforms. No knob was
set by reading a retrieval method's results; the comment beside each default says where it comes from. The
mechanisms live in :mod:`crops_ray.world.catalog` (videos, queries, grades, the incumbent's candidates),
:mod:`crops_ray.world.users` (interests, intents, the query typed, clicks, reformulations) and
:mod:`crops_ray.world.sessions` (the logging engine, sessions, the recommendation feed);
:mod:`crops_ray.world.generator` writes the world.

The training period starts at ``T0`` and lasts ``train_days``; the evaluation period follows for ``eval_days``.
"""

from __future__ import annotations

from crops_ray.config import config

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, the start of the training period
DAY = 86_400


@config
class WorldConfig:
    seed: int = 0
    # catalog: 108 videos per (sense, subtopic) = 9 per angle, 864 per sense, 1,700-2,600 per ambiguous word,
    # so a subtopic query has more plausible videos than K = 100 (a platform has thousands of near-identical
    # videos per topic). The ceiling is the demo's budget: the ~26k short texts encode in ~3.5 min on 2 cores.
    videos_per_subtopic: int = 108
    distractors_per_subtopic: int = 16  # hard negatives per (domain, subtopic)
    topic_videos_per_subtopic: int = 16  # plain everyday topics
    caption_rate: float = 0.35  # uploads with a one-line caption; the rest carry a title and hashtags only
    users: int = 1200  # the demo's budget: scoring every mined pair with the discriminator grows with the users
    train_sessions_per_user: float = 6.0
    eval_sessions_per_user: float = 2.0
    rec_per_user: float = 40.0  # mean recommendation-feed interactions per user (training period)
    train_days: int = 14
    eval_days: int = 7
    shards: int = 4
    popularity_sigma: float = 1.0  # log-normal popularity spread
    trend_correlation: float = 0.5  # correlation of log popularity between training and evaluation periods
    rec_freshness: float = 0.7  # how far the rec feed's popularity leans to the evaluation-period trend
    # vocabulary gap (v2)
    vocab_gap_rate: float = 0.3  # sense videos whose text never names the ambiguous word (alias, hashtag)
    angle_gap_rate: float = 0.5  # videos naming their angle in slang / jargon / hashtag / loanword
    engine_gap_recall: float = 0.2  # chance the term-based incumbent still retrieves such a video for a query
    # long tail (v2): Zipf exponents of subtopic and angle popularity (~1 in query-log studies)
    subtopic_zipf: float = 1.0
    angle_zipf: float = 1.0
    # how specific a query is, for a session about a sense: bare word, sense query, subtopic, subtopic + angle
    sense_query_mix: tuple = (0.30, 0.10, 0.30, 0.30)
    # for plain topics and distractors: subtopic, subtopic + angle
    topic_query_mix: tuple = (0.55, 0.45)
    # users
    minority_demand: float = 0.6  # a minority sense's user demand relative to the dominant sense
    distractor_demand: float = 0.4
    secondary_interests: int = 2
    primary_interest_share: float = 0.6
    # the logging search engine
    exposure_bias: float = 3.0  # added to the dominant sense of an ambiguous query (log-popularity units)
    grade_weight: float = 2.5  # weight of relevance grade in the ranker's score
    engine_noise: float = 0.7
    noise_candidates: int = 30  # irrelevant candidates per query the engine may surface
    exposed_range: tuple = (4, 10)  # results a request shows (inclusive)
    n_ranked: int = 8
    pre_ranking_pool: int = 40
    n_filtered: int = 6
    # user behaviour: attraction by fit (exact angle, same subtopic, same topic, anything else)
    click_attraction: tuple = (0.65, 0.35, 0.08, 0.01)
    long_play: tuple = (0.70, 0.40, 0.15, 0.05)  # P(long play | click) by the same fit
    position_bias: float = 1.0
    reformulate_rate: float = 0.85  # after a request with no click
    reformulation_delay_s: tuple = (5, 80)  # inside the paper's 90 s window
    topic_switch_rate: float = 0.08  # another interest within 90 s: noise for P1
    late_followup_rate: float = 0.10  # same interest, outside the window
    late_followup_delay_s: tuple = (120, 900)
    rec_noise: float = 0.15
    rec_primary_share: float = 0.5


SCALES: dict[str, dict] = {
    "tiny": dict(
        videos_per_subtopic=3,
        distractors_per_subtopic=2,
        topic_videos_per_subtopic=2,
        users=150,
        train_sessions_per_user=4,
        eval_sessions_per_user=2,
        rec_per_user=15,
        shards=2,
    ),
    "small": dict(),
    # the small world's catalog with 10x its users, so 10x its logs: bench/scaling.py measures how each stage's
    # cost grows with the logs (a platform's logs grow with its users far faster than its catalog of queries)
    "medium": dict(users=12_000, shards=8),
    "large": dict(
        videos_per_subtopic=400,
        distractors_per_subtopic=150,
        topic_videos_per_subtopic=150,
        users=200_000,
        train_sessions_per_user=6,
        eval_sessions_per_user=2,
        rec_per_user=60,
        shards=64,
    ),
}


def world_config(scale: str = "small", **overrides) -> WorldConfig:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    return WorldConfig(**{**SCALES[scale], **overrides})
