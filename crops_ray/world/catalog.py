"""The catalog, built once on the driver: videos, every query users can type, graded relevance, and the
incumbent engine's candidates for each query (:class:`Catalog`, :func:`build_catalog`, :func:`query_grades`).

- **Catalog.** (v1) Ambiguous words with several senses ("jaguar": car or big cat), videos per (sense, subtopic)
  built from real English phrases and facts (``vocabulary.yaml``), hard distractors from the same domains
  ("leopard cubs"), plain everyday topics. Each video has a popularity in the training period, a drifted one in
  the evaluation period (``trend_correlation``: short-video trends move within weeks) and a recommendation
  popularity leaning to the newer trend (``rec_freshness``: the paper's "recommender data is fresher").
- **A dense catalog.** (v2) Every (sense, subtopic) has ``videos_per_subtopic`` videos spread over 12 angles; a
  word has 1,700-2,600 videos and a domain several near-duplicate senses and distractors, so the top 100 of a
  query is a real choice among plausible videos (a platform has thousands of near-identical videos per topic).
- **A long tail of queries.** (v2) Besides the bare word, the sense query and the subtopic query, users type
  long-tail queries: a subtopic plus an angle ("jaguar cubs wild slow motion", ``vocabulary.ANGLES``).
  Subtopics and angles are chosen with Zipf popularity (``subtopic_zipf``, ``angle_zipf``: query frequencies in
  web and video search follow a power law with exponent near 1, e.g. Silverstein et al. 1999, Spink et al.
  2001), so most distinct queries of the evaluation period were typed a couple of times or never in training.
  The catalog holds every such query and the Zipf popularities (``subtopic_p``, ``angle_p``); users draw from
  them (:func:`crops_ray.world.users.choose_intent`).
- **A vocabulary gap.** (v2) ``vocab_gap_rate`` of the sense videos never use the ambiguous word (creators name
  the thing with an alias, a nickname or a hashtag: "Panthera onca cubs"); ``angle_gap_rate`` of all videos name
  their angle in slang, creator jargon, hashtags or loanwords ("slowmo", "#ralenti") instead of the words users
  type. The incumbent's candidate generation is term based (an inverted index over the query's word), so it
  retrieves such a video only with probability ``engine_gap_recall`` (its other channels): the vocabulary
  mismatch problem (Furnas et al. 1987) that dense retrieval is meant to close, and another filter bubble.

Determinism: the catalog is built on the driver from one seed (``SeedSequence([seed, 1_000_003])``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from crops_ray.world import vocabulary as V
from crops_ray.world.config import WorldConfig

KINDS = ("ambiguous", "sense", "subtopic", "tail")


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
