"""The embedded default world (v2): a synthetic short-video platform with a filter bubble and a long tail.

Every mechanism has its knob in :class:`WorldConfig` and stands for a fact about real platforms. No knob was
set by reading a retrieval method's results; the comment beside each default says where it comes from.

v1 mechanisms (kept):

- **Catalog.** Ambiguous words with several senses ("jaguar": car or big cat), videos per (sense, subtopic)
  built from real English phrases and facts (``vocabulary.yaml``), hard distractors from the same domains
  ("leopard cubs"), plain everyday topics. Each video has a popularity in the training period, a drifted one in
  the evaluation period (``trend_correlation``: short-video trends move within weeks) and a recommendation
  popularity leaning to the newer trend (``rec_freshness``: the paper's "recommender data is fresher").
- **Users** with a primary and secondary interests; minority senses have real demand (``minority_demand``).
- **The logging engine** (the incumbent) scores its candidates by relevance and popularity and, for a bare
  ambiguous word, adds ``exposure_bias`` to the dominant sense: the filter bubble. It logs every request's
  funnel: ``exposed``, ``ranked`` (the next ``n_ranked``) and a sample of ``filtered``.
- **Reformulation** within 90 s after an unsatisfying request (no click), to a more specific query; topic
  switches inside the window (noise for P1) and follow-ups after it.
- **Recommendation feed**: interactions with each user's interests by the fresher popularity, including
  videos search never exposes, plus exploration noise.

v2 mechanisms:

- **A long tail of queries.** Besides the bare word, the sense query and the subtopic query, users type
  long-tail queries: a subtopic plus an angle ("jaguar cubs wild slow motion", ``vocabulary.ANGLES``).
  Subtopics and angles are chosen with Zipf popularity (``subtopic_zipf``, ``angle_zipf``: query frequencies in
  web and video search follow a power law with exponent near 1, e.g. Silverstein et al. 1999, Spink et al.
  2001), so most distinct queries of the evaluation period were typed a couple of times or never in training.
- **A dense catalog.** Every (sense, subtopic) has ``videos_per_subtopic`` videos spread over 12 angles; a
  word has 1,700-2,600 videos and a domain several near-duplicate senses and distractors, so the top 100 of a
  query is a real choice among plausible videos (a platform has thousands of near-identical videos per topic).
- **Sparse, position-biased clicks.** A request shows ``exposed_range`` results (4-10: a phone screen of the
  two-column feed, then a short scroll); a user examines rank i with probability ``1 / (i + 1) ** position_bias``
  (the rank^-1 examination curve of eye-tracking and click-model studies: Joachims et al. 2005, Craswell et al.
  2008) and clicks by how well the video fits the intent (``click_attraction``: exact angle > subtopic > topic).
  Playing long (the online A/B test's long-play rate) follows the same fit (``long_play``).
- **A vocabulary gap.** ``vocab_gap_rate`` of the sense videos never use the ambiguous word (creators name the
  thing with an alias, a nickname or a hashtag: "Panthera onca cubs"); ``angle_gap_rate`` of all videos name
  their angle in slang, creator jargon, hashtags or loanwords ("slowmo", "#ralenti") instead of the words users
  type. The incumbent's candidate generation is term based (an inverted index over the query's word), so it
  retrieves such a video only with probability ``engine_gap_recall`` (its other channels): the vocabulary
  mismatch problem (Furnas et al. 1987) that dense retrieval is meant to close, and another filter bubble.

Ground truth stays apart from the logs, in ``eval/``: graded ``qrels`` for every query typed in the evaluation
period, ``ct`` (its clicked pairs) and ``qr`` (what users clicked after a genuine reformulation within 90 s,
credited to the original query), ``video_truth`` (sense, subtopic, angle, gap flags per video) and ``queries``
(kind, sense, subtopic, angle, training-period requests and clicks, and the bucket: head / torso / tail /
unseen, :mod:`crops_ray.buckets`).

Determinism: the catalog is built on the driver from one seed; each user's interests come from
``SeedSequence([seed, 2, user])`` and their sessions from ``SeedSequence([seed, shard])``, so the same seed gives
the same bytes whether shards run in-process or as Ray tasks, and the online A/B test
(:mod:`crops_ray.world.online`) meets the same users.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from crops_ray import buckets as B
from crops_ray import schema as S
from crops_ray import storage
from crops_ray.world import vocabulary as V

WORLD_VERSION = 2  # bump when the same seed would write a different world (caches built on a world key on it)
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, the start of the training period
DAY = 86_400
ACTIONS = ("watch", "like", "share")
KINDS = ("ambiguous", "sense", "subtopic", "tail")


@dataclass
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


# ------------------------------------------------------------------------------------------------ catalog


@dataclass
class Catalog:
    """Everything the driver builds once: videos, queries, grades and the engine's candidate lists."""

    video_ids: list[str]
    texts: list[str]
    topic: np.ndarray  # per video: index into topic_keys (a sense key or a topic key)
    subtopic: np.ndarray  # per video: 0..7
    angle: np.ndarray  # per video: index into vocabulary.ANGLES
    word_gap: np.ndarray  # per video: a sense video that never names its ambiguous word
    angle_gap: np.ndarray  # per video: names its angle without the query's words
    log_pop: np.ndarray  # [3, V]: training, evaluation, recommendation popularity (log)
    topic_keys: list[str]
    topic_word: list[str]  # "" for plain topics and distractors
    topic_domain: list[str]
    topic_dominant: list[bool]  # the word's dominant sense (topics: False)
    subtopic_p: np.ndarray  # [topics, 8]: Zipf popularity of each topic's subtopics
    angle_p: np.ndarray  # [angles]: Zipf popularity of the angles
    title_mentions: np.ndarray  # [V]: the title names the video's ambiguous word
    queries: list[dict] = field(default_factory=list)
    candidates: list[np.ndarray] = field(default_factory=list)  # per query: the incumbent's candidates
    grades: list[np.ndarray] = field(default_factory=list)  # per query: grade of each candidate
    query_index: dict[str, int] = field(default_factory=dict)
    topic_videos: list[np.ndarray] = field(default_factory=list)
    subtopic_queries: dict[tuple[int, int], int] = field(default_factory=dict)
    tail_queries: dict[tuple[int, int, int], int] = field(default_factory=dict)
    word_query: dict[str, int] = field(default_factory=dict)
    sense_query: dict[int, int] = field(default_factory=dict)
    video_dominant: np.ndarray | None = None
    distractor_of_domain: dict[str, int] = field(default_factory=dict)


def _topics() -> list[tuple[str, str, str, bool, object]]:
    """(key, word, domain, dominant, vocabulary entry) for every sense, distractor and plain topic."""
    out = []
    for w in V.WORDS:
        for i, s in enumerate(w.senses):
            out.append((f"{s.word}/{s.name}", s.word, s.domain, i == 0, s))
    for t in (*V.DISTRACTORS, *V.PLAIN_TOPICS):
        out.append((t.key, "", t.domain, False, t))
    return out


_PATTERNS: dict[str, re.Pattern] = {}


def _word_pattern(word: str) -> re.Pattern:
    forms = V._FORBIDDEN_FORMS.get(word, (word, word + "s"))
    return re.compile(
        r"\b(?:" + "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)) + r")\b", re.IGNORECASE
    )


def _video_text(
    rng: np.random.Generator, entry, sub: int, angle: V.Angle, word_gap: bool, angle_gap: bool, caption_rate: float
) -> str:
    """Title, an optional one-line caption and hashtags, as short-video uploads carry them.

    A word-gap video names the thing only by its aliases, word-free facts and word-free hashtags.
    """
    word = getattr(entry, "word", "")
    pattern = _PATTERNS.setdefault(word, _word_pattern(word)) if word else None
    phrase = entry.subtopics[sub]
    if word_gap and pattern is not None:
        phrase = pattern.sub(lambda _m: entry.aliases[rng.integers(len(entry.aliases))], phrase)
    forms = angle.gap_forms if angle_gap else angle.forms
    title = V.ANGLE_TITLE_FORMATS[rng.integers(len(V.ANGLE_TITLE_FORMATS))].format(
        s=phrase, a=forms[rng.integers(len(forms))]
    )
    title = title[0].upper() + title[1:]
    tags = [h for h in entry.hashtags if not (word_gap and word in h)]
    chosen = rng.choice(len(tags), size=min(2, len(tags)), replace=False)
    hashtags = " ".join(f"#{tags[t]}" for t in chosen)
    if rng.random() < caption_rate:
        facts = [f for f in entry.facts if not (word_gap and pattern.search(f))]
        return f"{title}. {facts[rng.integers(len(facts))]} {hashtags}"
    return f"{title} {hashtags}"


def _zipf(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf probabilities over ``n`` items in a random order (which item is the popular one is drawn)."""
    p = 1.0 / np.arange(1, n + 1) ** s
    return (p / p.sum())[rng.permutation(n)]


def build_catalog(cfg: WorldConfig) -> Catalog:
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1_000_003]))
    topics = _topics()
    n_angles = len(V.ANGLES)
    video_ids, texts, topic, subtopic, angle, word_gap, angle_gap = [], [], [], [], [], [], []
    for ti, (key, word, domain, dominant, entry) in enumerate(topics):
        is_sense = bool(word)
        per = (
            cfg.videos_per_subtopic
            if is_sense
            else (cfg.distractors_per_subtopic if key.endswith("/distractor") else cfg.topic_videos_per_subtopic)
        )
        for sub in range(len(entry.subtopics)):
            first = int(rng.integers(n_angles))  # angles round-robin from a random start: every angle covered
            for j in range(per):
                a = (first + j) % n_angles
                wg = is_sense and rng.random() < cfg.vocab_gap_rate
                ag = bool(rng.random() < cfg.angle_gap_rate)
                video_ids.append(f"v{len(video_ids):07d}")
                texts.append(_video_text(rng, entry, sub, V.ANGLES[a], wg, ag, cfg.caption_rate))
                topic.append(ti)
                subtopic.append(sub)
                angle.append(a)
                word_gap.append(wg)
                angle_gap.append(ag)
    n = len(video_ids)
    z_train = rng.standard_normal(n)
    z_eval = cfg.trend_correlation * z_train + np.sqrt(1 - cfg.trend_correlation**2) * rng.standard_normal(n)
    z_rec = (1 - cfg.rec_freshness) * z_train + cfg.rec_freshness * z_eval
    z_rec = z_rec / z_rec.std()
    topic_arr = np.asarray(topic, dtype=np.int32)
    patterns = {w: _word_pattern(w) for w in {t[1] for t in topics} if w}
    title_mentions = np.array(
        [
            bool(topics[t][1]) and bool(patterns[topics[t][1]].search(text.split(". ", 1)[0]))
            for t, text in zip(topic, texts)
        ]
    )
    cat = Catalog(
        video_ids=video_ids,
        texts=texts,
        topic=topic_arr,
        subtopic=np.asarray(subtopic, dtype=np.int16),
        angle=np.asarray(angle, dtype=np.int16),
        word_gap=np.asarray(word_gap, dtype=bool),
        angle_gap=np.asarray(angle_gap, dtype=bool),
        log_pop=cfg.popularity_sigma * np.stack([z_train, z_eval, z_rec]),
        topic_keys=[t[0] for t in topics],
        topic_word=[t[1] for t in topics],
        topic_domain=[t[2] for t in topics],
        topic_dominant=[t[3] for t in topics],
        subtopic_p=np.stack([_zipf(8, cfg.subtopic_zipf, rng) for _ in topics]),
        angle_p=_zipf(n_angles, cfg.angle_zipf, rng),
        title_mentions=title_mentions,
    )
    cat.video_dominant = np.asarray(cat.topic_dominant)[cat.topic]
    cat.topic_videos = [np.flatnonzero(cat.topic == ti) for ti in range(len(topics))]
    cat.distractor_of_domain = {t[2]: i for i, t in enumerate(topics) if t[0].endswith("/distractor")}
    _build_queries(cat, topics, rng, cfg)
    return cat


def query_grades(cat: Catalog, q: dict) -> np.ndarray:
    """Graded relevance (0-3) of every video for query ``q``: the qrels, and what the ranker knows.

    - bare ambiguous word: every sense's videos, 3 when the title names the word, else 2;
    - sense query: that sense's videos (3 / 2 as above), 1 for the same domain's distractors;
    - subtopic query: 3 for the subtopic's videos, 1 for the sense's other subtopics;
    - long-tail query (subtopic + angle): 3 for the subtopic's videos of that angle, 2 for its other
      videos, 1 for the sense's other subtopics of that angle.
    """
    kind = q["kind"]
    if kind == "ambiguous":
        in_word = np.asarray(cat.topic_word)[cat.topic] == q["word"]
        return np.where(in_word, np.where(cat.title_mentions, 3, 2), 0).astype(np.int8)
    ti = cat.topic_keys.index(q["topic"])
    mine = cat.topic == ti
    if kind == "sense":
        distractor = cat.topic == cat.distractor_of_domain.get(cat.topic_domain[ti], -1)
        return np.where(mine, np.where(cat.title_mentions, 3, 2), np.where(distractor, 1, 0)).astype(np.int8)
    same_sub = mine & (cat.subtopic == q["subtopic"])
    if kind == "subtopic":
        return np.where(same_sub, 3, np.where(mine, 1, 0)).astype(np.int8)
    same_angle = cat.angle == q["angle"]
    return np.where(same_sub & same_angle, 3, np.where(same_sub, 2, np.where(mine & same_angle, 1, 0))).astype(np.int8)


def _build_queries(cat: Catalog, topics, rng: np.random.Generator, cfg: WorldConfig) -> None:
    """Every query users can type, its grades, and the incumbent engine's candidates for it."""
    n = len(cat.video_ids)
    domains = sorted(set(cat.topic_domain))
    domain_id = np.array([domains.index(d) for d in cat.topic_domain])[cat.topic]
    words = sorted(set(cat.topic_word))
    word_id = np.array([words.index(w) for w in cat.topic_word])[cat.topic]

    def add(query: str, kind: str, ti: int | None, sub: int = -1, angle: int = -1, word: str = "") -> int:
        q = {
            "query": query,
            "kind": kind,
            "word": word,
            "topic": cat.topic_keys[ti] if ti is not None else "",
            "subtopic": sub,
            "angle": V.ANGLES[angle].name if angle >= 0 else "",
            "angle_index": angle,
        }
        grade = query_grades(cat, q)
        relevant = np.flatnonzero(grade > 0)
        # The incumbent's candidate generation is term based: a relevant video that never names the query's
        # word is found only through other channels, with probability engine_gap_recall.
        found = relevant[~cat.word_gap[relevant] | (rng.random(len(relevant)) < cfg.engine_gap_recall)]
        # Irrelevant candidates the engine may surface: lexical neighbours first (same domain or same word).
        near_mask = domain_id == (domains.index(cat.topic_domain[ti]) if ti is not None else -1)
        if word:
            near_mask |= word_id == words.index(word)
        near = np.flatnonzero(near_mask & (grade == 0))
        k_near = min(len(near), cfg.noise_candidates // 2)
        far = rng.integers(n, size=cfg.noise_candidates - k_near)
        noise = np.concatenate(
            [near[rng.integers(len(near), size=k_near)] if k_near else np.empty(0, int), far[grade[far] == 0]]
        )
        cand = np.concatenate([found, np.unique(noise)]).astype(np.int32)
        qi = len(cat.queries)
        if query in cat.query_index:
            raise ValueError(f"query {query!r} is generated twice")
        cat.query_index[query] = qi
        cat.queries.append(q)
        cat.candidates.append(cand)
        cat.grades.append(grade[cand])
        return qi

    for w in V.WORDS:
        cat.word_query[w.word] = add(w.word, "ambiguous", None, word=w.word)
    for ti, (key, word, domain, dominant, entry) in enumerate(topics):
        if word:
            cat.sense_query[ti] = add(entry.sense_query, "sense", ti, word=word)
        for sub, q in enumerate(entry.subtopic_queries):
            cat.subtopic_queries[(ti, sub)] = add(q, "subtopic", ti, sub, word=word)
            for a, angle in enumerate(V.ANGLES):
                cat.tail_queries[(ti, sub, a)] = add(f"{q} {angle.query}", "tail", ti, sub, a, word=word)


# ------------------------------------------------------------------------------------------------ users


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


def generate_shard(
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
        exposed=0,
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
            stats["exposed"] += len(exposed)
            counts[qi, 0] += 1
            counts[qi, 1] += int(clicked.sum())
            for stage, vids in (
                ("clicked", exposed[clicked]),
                ("exposed", exposed[~clicked]),
                ("ranked", ranked),
                ("filtered", filtered),
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
                if r < cfg.topic_switch_rate:
                    other = int(interests[(list(interests).index(intent[0]) + 1) % len(interests)])
                    intent2 = choose_intent(cat, rng, other)
                    request(
                        uid,
                        query_for(cat, cfg, rng, intent2, specific=True),
                        ts + int(rng.integers(*cfg.reformulation_delay_s)),
                        intent2,
                        period,
                    )
                    stats["topic_switches"] += period == 0
                elif r < cfg.topic_switch_rate + cfg.late_followup_rate:
                    intent2 = choose_intent(cat, rng, intent[0])
                    request(
                        uid,
                        query_for(cat, cfg, rng, intent2, specific=True),
                        ts + int(rng.integers(*cfg.late_followup_delay_s)),
                        intent2,
                        period,
                    )
                    stats["late_followups"] += period == 0
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


# ------------------------------------------------------------------------------------------------ writing


def _write_shard(cat: Catalog, cfg: WorldConfig, shard: int, user_range: tuple[int, int], out: str) -> dict:
    result = generate_shard(cat, cfg, shard, user_range, interest_weights(cat, cfg))
    storage.write_table(
        pa.table(result.search, schema=S.SEARCH_LOG_SCHEMA), f"{out}/search_log/part-{shard:05d}.parquet"
    )
    storage.write_table(pa.table(result.rec, schema=S.REC_LOG_SCHEMA), f"{out}/rec_log/part-{shard:05d}.parquet")
    return {
        "ct": result.ct,
        "qr": result.qr,
        "stats": result.stats,
        "search_rows": len(result.search["request_id"]),
        "query_counts": result.query_counts,
    }


def generate_world(out: str, cfg: WorldConfig, use_ray: bool = False, progress=print) -> dict:
    """Write the world to ``out`` (a local path or any URI pyarrow writes; see storage.Output); returns its
    statistics.
    """
    started = time.time()
    storage.check_output(out)  # an existing folder we did not write is refused before minutes of generation
    cat = build_catalog(cfg)
    progress(f"catalog: {len(cat.video_ids):,} videos, {len(cat.queries):,} queries ({time.time() - started:.1f}s)")
    bounds = np.linspace(0, cfg.users, cfg.shards + 1).astype(int)
    ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    with storage.Output(out) as staging:
        storage.write_table(
            pa.table({"video_id": cat.video_ids, "text": cat.texts}, schema=S.VIDEOS_SCHEMA),
            f"{staging}/videos/part-00000.parquet",
        )
        results = []
        if use_ray:
            import ray

            from crops_ray.runtime import init_ray

            init_ray()
            cat_ref = ray.put(cat)
            remote = ray.remote(_write_shard)
            pending = [remote.remote(cat_ref, cfg, i, r, staging) for i, r in enumerate(ranges)]
            for i, ref in enumerate(pending):  # in shard order, so eval/ is the same bytes as in-process
                results.append(ray.get(ref))
                progress(f"users shard {i + 1}/{len(ranges)} done")
        else:
            for i, r in enumerate(ranges):
                results.append(_write_shard(cat, cfg, i, r, staging))
                progress(f"users shard {i + 1}/{len(ranges)} done")
        _write_truth(cat, results, staging)
        stats = _world_stats(cat, cfg, results, time.time() - started)
        storage.write_bytes(
            f"{staging}/world.json",
            json.dumps({"version": WORLD_VERSION, "config": asdict(cfg), "stats": stats}, indent=2).encode(),
        )
    return stats


def _dedup(pairs: list[tuple[str, str]]) -> pa.Table:
    unique = sorted(set(pairs))
    return pa.table({"query": [q for q, _ in unique], "video_id": [v for _, v in unique]}, schema=S.CT_SCHEMA)


def query_table(cat: Catalog, results: list[dict]) -> pa.Table:
    """Every query the world can generate, with its kind, sense, angle, log frequency and bucket."""
    counts = sum(r["query_counts"] for r in results)
    return pa.table(
        {
            "query": [q["query"] for q in cat.queries],
            "kind": [q["kind"] for q in cat.queries],
            "word": [q["word"] for q in cat.queries],
            "topic": [q["topic"] for q in cat.queries],
            "subtopic": pa.array([q["subtopic"] for q in cat.queries], pa.int8()),
            "angle": [q["angle"] for q in cat.queries],
            "train_requests": counts[:, 0],
            "train_clicks": counts[:, 1],
            "eval_requests": counts[:, 2],
            "bucket": B.bucket_of(counts[:, 0]),
        }
    )


def _write_truth(cat: Catalog, results: list[dict], out: str) -> None:
    queries = query_table(cat, results)
    typed = (queries["train_requests"].to_numpy() > 0) | (queries["eval_requests"].to_numpy() > 0)
    rows = {"query": [], "video_id": [], "grade": [], "evaluated": []}
    for qi in np.flatnonzero(typed):
        q = cat.queries[qi]
        grade = query_grades(cat, q)
        keep = np.flatnonzero(grade > 0)
        rows["query"] += [q["query"]] * len(keep)
        rows["video_id"] += [cat.video_ids[v] for v in keep]
        rows["grade"] += grade[keep].tolist()
        rows["evaluated"] += [bool(queries["eval_requests"][int(qi)].as_py() > 0)] * len(keep)
    judged = pa.table(rows, schema=S.QRELS_SCHEMA.append(pa.field("evaluated", pa.bool_())))
    # qrels: what the evaluation period typed (Table 1's NDCG); judgments: every query typed in either period,
    # the truth the data-engine audit and the discriminator's labelled pairs need (mined pairs are for
    # training-period queries).
    storage.write_table(judged.filter(judged["evaluated"]).select(S.QRELS_SCHEMA.names), f"{out}/eval/qrels.parquet")
    storage.write_table(judged.select(S.QRELS_SCHEMA.names), f"{out}/eval/judgments.parquet")
    storage.write_table(_dedup([p for r in results for p in r["ct"]]), f"{out}/eval/ct.parquet")
    storage.write_table(_dedup([p for r in results for p in r["qr"]]), f"{out}/eval/qr.parquet")
    truth = pa.table(
        {
            "video_id": cat.video_ids,
            "topic": [cat.topic_keys[t] for t in cat.topic],
            "word": [cat.topic_word[t] for t in cat.topic],
            "domain": [cat.topic_domain[t] for t in cat.topic],
            "dominant": [cat.topic_dominant[t] for t in cat.topic],
            "subtopic": cat.subtopic.astype(np.int8),
            "angle": [V.ANGLES[a].name for a in cat.angle],
            "word_gap": cat.word_gap,
            "angle_gap": cat.angle_gap,
        }
    )
    storage.write_table(truth, f"{out}/eval/video_truth.parquet")
    storage.write_table(queries, f"{out}/eval/queries.parquet")


def _world_stats(cat: Catalog, cfg: WorldConfig, results: list[dict], seconds: float) -> dict:
    total = {k: sum(r["stats"][k] for r in results) for k in results[0]["stats"]}
    queries = query_table(cat, results).to_pandas()
    issued = queries[queries["eval_requests"] > 0]
    buckets = issued["bucket"].value_counts()
    return {
        "users": cfg.users,
        "videos": len(cat.video_ids),
        "queries": len(cat.queries),
        "ambiguous_words": len(V.WORDS),
        "senses": sum(1 for w in cat.topic_word if w),
        "videos_without_their_word": int(cat.word_gap.sum()),
        "videos_with_slang_angle": int(cat.angle_gap.sum()),
        "requests": total["requests"],
        "search_log_rows": sum(r["search_rows"] for r in results),
        "distinct_training_queries": int((queries["train_requests"] > 0).sum()),
        "results_shown_per_request": round(total["exposed"] / max(1, total["requests"]), 2),
        "clicks": total["clicks"],
        "clicks_per_request": round(total["clicks"] / max(1, total["requests"]), 3),
        "reformulations": total["reformulations"],
        "topic_switches_within_window": total["topic_switches"],
        "late_followups": total["late_followups"],
        "rec_events": total["rec_events"],
        "ambiguous_requests": total["ambiguous_requests"],
        "ambiguous_intent_never_exposed": round(
            total["ambiguous_intent_unexposed"] / max(1, total["ambiguous_requests"]), 4
        ),
        "eval_requests": total["eval_requests"],
        "eval_distinct_queries": len(issued),
        **{f"eval_queries_{b}": int(buckets.get(b, 0)) for b in B.BUCKETS},
        "eval_queries_with_at_most_2_training_clicks": round(float((issued["train_clicks"] <= 2).mean()), 4)
        if len(issued)
        else 0.0,
        "eval_ct_pairs": len({p for r in results for p in r["ct"]}),
        "eval_qr_pairs": len({p for r in results for p in r["qr"]}),
        "seconds": round(seconds, 2),
    }


def format_stats(stats: dict) -> str:
    lines = ["| statistic | value |", "|---|---:|"]
    for k, v in stats.items():
        lines.append(f"| {k.replace('_', ' ')} | {v:,} |" if isinstance(v, int) else f"| {k.replace('_', ' ')} | {v} |")
    return "\n".join(lines)
