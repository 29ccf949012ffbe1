"""The embedded default world: a synthetic short-video platform with a filter bubble.

What it simulates, and which knob controls each mechanism (all in :class:`WorldConfig`):

- **Catalog.** Ambiguous words with several senses ("jaguar": car or big cat), many videos per sense built from
  real English phrases and facts (``vocabulary.py``), hard distractors from the same domains ("leopard cubs"),
  and plain everyday topics. Each video has a popularity in the training period, a drifted popularity in the
  later evaluation period (``trend_correlation``: short-video trends move), and a recommendation popularity
  that leans towards the newer trend (``rec_freshness``: the paper's "recommender data is fresher").
- **Users.** Each has a primary and secondary interests (a sense or a topic). Minority senses have real demand
  (``minority_demand``), far more than the search engine exposes.
- **The logging search engine** scores candidates by relevance and popularity and, for an ambiguous query,
  adds ``exposure_bias`` to the dominant sense: the filter bubble. Its funnel logs ``exposed`` (top
  ``n_exposed``), ``ranked`` (the next ``n_ranked``) and a sample of ``filtered`` (dropped between pre-ranking
  and ranking) for every request; clicks follow the user's intent over what was shown.
- **Reformulation.** A user who clicked nothing reformulates to a more specific query within 90 s (and then
  clicks what they wanted); some users instead switch to another interest within 90 s (noise that P1's
  discriminator must filter), or follow up after the window.
- **Recommendation feed.** Interactions with videos of each user's interests, by recommendation popularity,
  including videos that search never exposes for the ambiguous query, plus exploration noise.

Ground truth stays apart from the logs, in ``eval/``: graded ``qrels``, ``ct`` (clicked pairs of the later
evaluation period) and ``qr`` (videos clicked after a genuine reformulation within 90 s in that period,
credited to the original query), plus ``video_truth`` and ``queries`` (sense and topic of every video/query).

Determinism: the catalog is built on the driver from one seed; users are split into shards, each generated
from ``SeedSequence([seed, shard])``, so the same seed gives the same bytes whether shards run in-process or
as Ray tasks.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from crops_ray import schema as S
from crops_ray import storage
from crops_ray.world import vocabulary as V

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, the start of the training period
DAY = 86_400
ACTIONS = ("watch", "like", "share")


@dataclass
class WorldConfig:
    seed: int = 0
    videos_per_subtopic: int = 20  # per (sense, subtopic): hundreds of competing videos per sense
    distractors_per_subtopic: int = 10  # hard negatives per (domain, subtopic)
    topic_videos_per_subtopic: int = 10  # plain everyday topics
    users: int = 2000
    train_sessions_per_user: float = 6.0
    eval_sessions_per_user: float = 2.0
    rec_per_user: float = 40.0  # mean recommendation-feed interactions per user (training period)
    train_days: int = 14
    eval_days: int = 7
    shards: int = 4
    # catalog
    alias_rate: float = 0.3  # share of sense videos whose title names the thing without the ambiguous word
    popularity_sigma: float = 1.0  # log-normal popularity spread
    trend_correlation: float = 0.5  # correlation of log popularity between training and evaluation periods
    rec_freshness: float = 0.7  # how far the rec feed's popularity leans to the evaluation-period trend
    # users
    minority_demand: float = 0.6  # a minority sense's user demand relative to the dominant sense
    distractor_demand: float = 0.4
    secondary_interests: int = 2
    primary_interest_share: float = 0.6
    ambiguous_query_share: float = 0.45  # of a sense-interest session, the share that types the bare word
    sense_query_share: float = 0.15
    # the logging search engine
    exposure_bias: float = 3.0  # added to the dominant sense of an ambiguous query (log-popularity units)
    grade_weight: float = 2.5  # weight of relevance grade in the engine's score
    engine_noise: float = 0.7
    noise_candidates: int = 30  # irrelevant candidates per query the engine may surface
    n_exposed: int = 6
    n_ranked: int = 8
    pre_ranking_pool: int = 40
    n_filtered: int = 6
    # user behaviour
    click_relevant: float = 0.35
    click_same_subtopic_boost: float = 1.6
    click_noise: float = 0.02
    position_decay: float = 0.15
    reformulate_rate: float = 0.85  # after a request with no click
    reformulation_delay_s: tuple = (5, 80)  # inside the paper's 90 s window
    topic_switch_rate: float = 0.08  # another interest within 90 s: noise for P1
    late_followup_rate: float = 0.10  # same interest, outside the window
    late_followup_delay_s: tuple = (120, 900)
    rec_noise: float = 0.15
    rec_primary_share: float = 0.5


SCALES: dict[str, dict] = {
    "tiny": dict(videos_per_subtopic=3, distractors_per_subtopic=2, topic_videos_per_subtopic=2, users=150, train_sessions_per_user=4, eval_sessions_per_user=2, rec_per_user=15, shards=2),
    "small": dict(),
    "large": dict(videos_per_subtopic=400, distractors_per_subtopic=150, topic_videos_per_subtopic=150, users=200_000, train_sessions_per_user=6, eval_sessions_per_user=2, rec_per_user=60, shards=64),
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
    log_pop: np.ndarray  # [3, V]: training, evaluation, recommendation popularity (log)
    topic_keys: list[str]
    topic_word: list[str]  # "" for plain topics and distractors
    topic_domain: list[str]
    topic_dominant: list[bool]  # the word's dominant sense (topics: False)
    queries: list[dict] = field(default_factory=list)
    candidates: list[np.ndarray] = field(default_factory=list)  # per query: video indices
    grades: list[np.ndarray] = field(default_factory=list)  # per query: grade of each candidate
    topic_videos: list[np.ndarray] = field(default_factory=list)
    topic_queries: list[list[int]] = field(default_factory=list)  # per topic: its specific query indices
    word_query: dict[str, int] = field(default_factory=dict)
    sense_query: dict[int, int] = field(default_factory=dict)
    video_dominant: np.ndarray | None = None


def _topics() -> list[tuple[str, str, str, bool, object]]:
    """(key, word, domain, dominant, vocabulary entry) for every sense, distractor and plain topic."""
    out = []
    for w in V.WORDS:
        for i, s in enumerate(w.senses):
            out.append((f"{s.word}/{s.name}", s.word, s.domain, i == 0, s))
    for t in (*V.DISTRACTORS, *V.PLAIN_TOPICS):
        out.append((t.key, "", t.domain, False, t))
    return out


def _video_text(rng: np.random.Generator, entry, sub: int, is_sense: bool, alias_rate: float) -> str:
    phrase = entry.subtopics[sub]
    if is_sense and rng.random() < alias_rate:
        pattern = re.compile(rf"\b{re.escape(entry.word)}s?\b", re.IGNORECASE)
        if pattern.match(phrase):
            phrase = pattern.sub(entry.aliases[rng.integers(len(entry.aliases))], phrase, count=1)
    title = V.TITLE_FORMATS[rng.integers(len(V.TITLE_FORMATS))].format(s=phrase)
    title = title[0].upper() + title[1:]
    opener = V.CAPTION_OPENERS[rng.integers(len(V.CAPTION_OPENERS))].format(s=entry.subtopics[(sub + rng.integers(0, 2)) % len(entry.subtopics)])
    facts = rng.choice(len(entry.facts), size=2, replace=False)
    tags = rng.choice(len(entry.hashtags), size=min(3, len(entry.hashtags)), replace=False)
    caption = " ".join([opener, entry.facts[facts[0]], entry.facts[facts[1]]])
    return f"{title}. {caption} " + " ".join(f"#{entry.hashtags[t]}" for t in tags)


def build_catalog(cfg: WorldConfig) -> Catalog:
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1_000_003]))
    topics = _topics()
    video_ids, texts, topic, subtopic = [], [], [], []
    for ti, (key, word, domain, dominant, entry) in enumerate(topics):
        is_sense = bool(word)
        per = cfg.videos_per_subtopic if is_sense else (cfg.distractors_per_subtopic if key.endswith("/distractor") else cfg.topic_videos_per_subtopic)
        for sub in range(len(entry.subtopics)):
            for _ in range(per):
                video_ids.append(f"v{len(video_ids):07d}")
                texts.append(_video_text(rng, entry, sub, is_sense, cfg.alias_rate))
                topic.append(ti)
                subtopic.append(sub)
    n = len(video_ids)
    z_train = rng.standard_normal(n)
    z_eval = cfg.trend_correlation * z_train + np.sqrt(1 - cfg.trend_correlation**2) * rng.standard_normal(n)
    z_rec = (1 - cfg.rec_freshness) * z_train + cfg.rec_freshness * z_eval
    z_rec = z_rec / z_rec.std()
    cat = Catalog(
        video_ids=video_ids,
        texts=texts,
        topic=np.asarray(topic, dtype=np.int32),
        subtopic=np.asarray(subtopic, dtype=np.int16),
        log_pop=cfg.popularity_sigma * np.stack([z_train, z_eval, z_rec]),
        topic_keys=[t[0] for t in topics],
        topic_word=[t[1] for t in topics],
        topic_domain=[t[2] for t in topics],
        topic_dominant=[t[3] for t in topics],
    )
    cat.video_dominant = np.asarray(cat.topic_dominant)[cat.topic]
    cat.topic_videos = [np.flatnonzero(cat.topic == ti) for ti in range(len(topics))]
    cat.topic_queries = [[] for _ in topics]
    _build_queries(cat, topics, rng, cfg)
    return cat


def _mentions(texts: list[str], word: str) -> np.ndarray:
    pattern = re.compile(rf"\b{re.escape(word)}s?\b", re.IGNORECASE)
    return np.array([bool(pattern.search(t)) for t in texts])


def _build_queries(cat: Catalog, topics, rng: np.random.Generator, cfg: WorldConfig) -> None:
    """Queries and their graded relevance (0-3); grades > 0 are the qrels and the engine's relevant candidates."""
    n = len(cat.video_ids)
    titles = [t.split(". ", 1)[0] for t in cat.texts]
    domain_of = np.array([cat.topic_domain[t] for t in cat.topic])
    distractor_topic = {d: i for i, (k, *_rest) in enumerate(topics) for d in [topics[i][2]] if k.endswith("/distractor")}

    def add(query: str, kind: str, ti: int | None, sub: int | None, grade: np.ndarray, word: str = "") -> int:
        relevant = np.flatnonzero(grade > 0)
        pool = np.setdiff1d(np.arange(n), relevant)
        # Irrelevant candidates the engine may surface: lexical neighbours first (same word or same domain).
        near = pool[(domain_of[pool] == (cat.topic_domain[ti] if ti is not None else "")) | (np.isin(cat.topic[pool], [i for i, w in enumerate(cat.topic_word) if word and w == word]))]
        k_near = min(len(near), cfg.noise_candidates // 2)
        noise = np.concatenate([rng.choice(near, size=k_near, replace=False) if k_near else np.empty(0, int), rng.choice(pool, size=cfg.noise_candidates - k_near, replace=False)])
        cand = np.concatenate([relevant, np.unique(noise)]).astype(np.int32)
        qi = len(cat.queries)
        sense = cat.topic_keys[ti] if ti is not None else ""
        cat.queries.append({"query": query, "kind": kind, "word": word, "topic": sense, "subtopic": -1 if sub is None else sub})
        cat.candidates.append(cand)
        cat.grades.append(grade[cand].astype(np.int8))
        return qi

    # Ambiguous words: every sense is relevant; the word in the title is the strongest match.
    for w in V.WORDS:
        senses = [i for i, k in enumerate(cat.topic_keys) if cat.topic_word[i] == w.word]
        in_word = np.isin(cat.topic, senses)
        title_hit, text_hit = _mentions(titles, w.word), _mentions(cat.texts, w.word)
        grade = np.where(in_word, np.where(title_hit, 3, np.where(text_hit, 2, 1)), 0)
        cat.word_query[w.word] = add(w.word, "ambiguous", None, None, grade, w.word)
    for ti, (key, word, domain, dominant, entry) in enumerate(topics):
        mine = cat.topic == ti
        if word:
            same_domain_distractor = cat.topic == distractor_topic.get(domain, -1)
            grade = np.where(mine, np.where(_mentions(titles, word), 3, 2), np.where(same_domain_distractor, 1, 0))
            cat.sense_query[ti] = add(entry.sense_query, "sense", ti, None, grade, word)
        for sub, q in enumerate(entry.subtopic_queries):
            grade = np.where(mine & (cat.subtopic == sub), 3, np.where(mine, 1, 0))
            cat.topic_queries[ti].append(add(q, "subtopic", ti, sub, grade, word))


# ------------------------------------------------------------------------------------------------ users


@dataclass
class _Shard:
    search: dict
    rec: dict
    ct: list
    qr: list
    stats: dict


def _engine(cat: Catalog, cfg: WorldConfig, rng: np.random.Generator, qi: int, period: int) -> dict[str, np.ndarray]:
    """One request through the logging engine's funnel: exposed, ranked and a sample of filtered videos."""
    cand, grade = cat.candidates[qi], cat.grades[qi]
    score = cfg.grade_weight * grade + cat.log_pop[period, cand] + cfg.engine_noise * rng.standard_normal(len(cand))
    if cat.queries[qi]["kind"] == "ambiguous":
        score = score + cfg.exposure_bias * cat.video_dominant[cand]
    order = cand[np.argsort(-score, kind="stable")][: cfg.pre_ranking_pool]
    top = cfg.n_exposed + cfg.n_ranked
    dropped = order[top:]
    filtered = rng.choice(dropped, size=min(cfg.n_filtered, len(dropped)), replace=False) if len(dropped) else dropped
    return {"exposed": order[: cfg.n_exposed], "ranked": order[cfg.n_exposed : top], "filtered": filtered}


def _choose_interest(rng, interests: np.ndarray, cfg: WorldConfig) -> int:
    if rng.random() < cfg.primary_interest_share or len(interests) == 1:
        return int(interests[0])
    return int(interests[1 + rng.integers(len(interests) - 1)])


def _query_for(cat: Catalog, cfg: WorldConfig, rng, ti: int, specific: bool = False) -> tuple[int, int]:
    """(query index, subtopic the user has in mind) for a session about interest ``ti``."""
    sub = int(rng.integers(len(cat.topic_queries[ti])))
    word = cat.topic_word[ti]
    if word and not specific:
        r = rng.random()
        if r < cfg.ambiguous_query_share:
            return cat.word_query[word], sub
        if r < cfg.ambiguous_query_share + cfg.sense_query_share:
            return cat.sense_query[ti], sub
    return cat.topic_queries[ti][sub], sub


def _clicks(cat: Catalog, cfg: WorldConfig, rng, exposed: np.ndarray, ti: int, sub: int) -> np.ndarray:
    mine = cat.topic[exposed] == ti
    p = np.where(mine, cfg.click_relevant * np.where(cat.subtopic[exposed] == sub, cfg.click_same_subtopic_boost, 1.0), cfg.click_noise)
    p = np.minimum(p / (1 + cfg.position_decay * np.arange(len(exposed))), 1.0)
    return rng.random(len(exposed)) < p


def generate_shard(cat: Catalog, cfg: WorldConfig, shard: int, user_range: tuple[int, int], interest_weights: np.ndarray) -> _Shard:
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, shard]))
    search = {k: [] for k in S.SEARCH_LOG_SCHEMA.names}
    rec = {k: [] for k in S.REC_LOG_SCHEMA.names}
    ct, qr = [], []
    stats = dict(requests=0, eval_requests=0, clicks=0, reformulations=0, topic_switches=0, late_followups=0, ambiguous_requests=0, ambiguous_intent_unexposed=0, rec_events=0)
    n_topics = len(cat.topic_keys)
    request_counter = 0

    def request(uid: str, qi: int, ts: int, ti: int, sub: int, period: int) -> np.ndarray:
        nonlocal request_counter
        funnel = _engine(cat, cfg, rng, qi, period)
        clicked = _clicks(cat, cfg, rng, funnel["exposed"], ti, sub)
        rid = f"r{shard:04d}-{request_counter:08d}"
        request_counter += 1
        if period == 0:
            stats["requests"] += 1
            for stage, vids in (("clicked", funnel["exposed"][clicked]), ("exposed", funnel["exposed"][~clicked]), ("ranked", funnel["ranked"]), ("filtered", funnel["filtered"])):
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
            ct.extend((cat.queries[qi]["query"], cat.video_ids[v]) for v in funnel["exposed"][clicked])
        if cat.queries[qi]["kind"] == "ambiguous" and period == 0:
            stats["ambiguous_requests"] += 1
            stats["ambiguous_intent_unexposed"] += int(not np.any(cat.topic[funnel["exposed"]] == ti))
        return funnel["exposed"][clicked]

    for u in range(*user_range):
        uid = f"u{u:07d}"
        interests = rng.choice(n_topics, size=1 + cfg.secondary_interests, replace=False, p=interest_weights)
        for period, (start, days, mean) in enumerate(((T0, cfg.train_days, cfg.train_sessions_per_user), (T0 + cfg.train_days * DAY, cfg.eval_days, cfg.eval_sessions_per_user))):
            for _ in range(rng.poisson(mean)):
                ts = int(start + rng.integers(days * DAY - 3600))
                ti = _choose_interest(rng, interests, cfg)
                qi, sub = _query_for(cat, cfg, rng, ti)
                clicked = request(uid, qi, ts, ti, sub, period)
                if not len(clicked) and rng.random() < cfg.reformulate_rate:
                    q2 = cat.sense_query.get(ti) if cat.queries[qi]["kind"] == "ambiguous" and rng.random() < 0.3 else None
                    if q2 is None:
                        q2 = cat.topic_queries[ti][sub]
                        if q2 == qi:  # already specific: another facet of the same interest
                            sub = (sub + 1 + int(rng.integers(len(cat.topic_queries[ti]) - 1))) % len(cat.topic_queries[ti])
                            q2 = cat.topic_queries[ti][sub]
                    t2 = ts + int(rng.integers(*cfg.reformulation_delay_s))
                    clicked2 = request(uid, q2, t2, ti, sub, period)
                    stats["reformulations"] += period == 0
                    if period == 1:
                        qr.extend((cat.queries[qi]["query"], cat.video_ids[v]) for v in clicked2)
                    continue
                r = rng.random()
                if r < cfg.topic_switch_rate:
                    other = int(interests[(list(interests).index(ti) + 1) % len(interests)])
                    q2, sub2 = _query_for(cat, cfg, rng, other, specific=True)
                    request(uid, q2, ts + int(rng.integers(*cfg.reformulation_delay_s)), other, sub2, period)
                    stats["topic_switches"] += period == 0
                elif r < cfg.topic_switch_rate + cfg.late_followup_rate:
                    q2, sub2 = _query_for(cat, cfg, rng, ti, specific=True)
                    request(uid, q2, ts + int(rng.integers(*cfg.late_followup_delay_s)), ti, sub2, period)
                    stats["late_followups"] += period == 0
        # Recommendation feed (training period): each user's interests by the fresher rec popularity.
        for _ in range(rng.poisson(cfg.rec_per_user)):
            if rng.random() < cfg.rec_noise:
                v = int(rng.integers(len(cat.video_ids)))
            else:
                ti = int(interests[0]) if rng.random() < cfg.rec_primary_share else _choose_interest(rng, interests, cfg)
                pool = cat.topic_videos[ti]
                w = np.exp(cat.log_pop[2, pool])
                v = int(pool[np.searchsorted(np.cumsum(w), rng.random() * w.sum())])
            rec["user_id"].append(uid)
            rec["video_id"].append(cat.video_ids[v])
            rec["ts"].append(int(T0 + rng.integers(cfg.train_days * DAY)))
            rec["action"].append(ACTIONS[int(rng.choice(3, p=[0.7, 0.2, 0.1]))])
            stats["rec_events"] += 1
    return _Shard(search, rec, ct, qr, stats)


def _interest_weights(cat: Catalog, cfg: WorldConfig) -> np.ndarray:
    w = np.array([
        (1.0 if dom else cfg.minority_demand) if word else (cfg.distractor_demand if key.endswith("/distractor") else 1.0)
        for key, word, dom in zip(cat.topic_keys, cat.topic_word, cat.topic_dominant)
    ])
    return w / w.sum()


# ------------------------------------------------------------------------------------------------ writing


def _write_shard(cat: Catalog, cfg: WorldConfig, shard: int, user_range: tuple[int, int], out: str) -> dict:
    result = generate_shard(cat, cfg, shard, user_range, _interest_weights(cat, cfg))
    storage.write_table(pa.table(result.search, schema=S.SEARCH_LOG_SCHEMA), f"{out}/search_log/part-{shard:05d}.parquet")
    storage.write_table(pa.table(result.rec, schema=S.REC_LOG_SCHEMA), f"{out}/rec_log/part-{shard:05d}.parquet")
    return {"ct": result.ct, "qr": result.qr, "stats": result.stats, "search_rows": len(result.search["request_id"])}


def generate_world(out: str, cfg: WorldConfig, use_ray: bool = False, progress=print) -> dict:
    """Write the world to ``out`` (a local path or any URI pyarrow writes; see storage.Output); returns its statistics."""
    started = time.time()
    cat = build_catalog(cfg)
    progress(f"catalog: {len(cat.video_ids):,} videos, {len(cat.queries):,} queries ({time.time() - started:.1f}s)")
    bounds = np.linspace(0, cfg.users, cfg.shards + 1).astype(int)
    ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    with storage.Output(out) as staging:
        storage.write_table(pa.table({"video_id": cat.video_ids, "text": cat.texts}, schema=S.VIDEOS_SCHEMA), f"{staging}/videos/part-00000.parquet")
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
        storage.write_bytes(f"{staging}/world.json", json.dumps({"config": asdict(cfg), "stats": stats}, indent=2).encode())
    return stats


def _dedup(pairs: list[tuple[str, str]]) -> pa.Table:
    unique = sorted(set(pairs))
    return pa.table({"query": [q for q, _ in unique], "video_id": [v for _, v in unique]}, schema=S.CT_SCHEMA)


def _write_truth(cat: Catalog, results: list[dict], out: str) -> None:
    rows = {"query": [], "video_id": [], "grade": []}
    for q, cand, grade in zip(cat.queries, cat.candidates, cat.grades):
        keep = grade > 0
        rows["query"] += [q["query"]] * int(keep.sum())
        rows["video_id"] += [cat.video_ids[v] for v in cand[keep]]
        rows["grade"] += grade[keep].tolist()
    storage.write_table(pa.table(rows, schema=S.QRELS_SCHEMA), f"{out}/eval/qrels.parquet")
    storage.write_table(_dedup([p for r in results for p in r["ct"]]), f"{out}/eval/ct.parquet")
    storage.write_table(_dedup([p for r in results for p in r["qr"]]), f"{out}/eval/qr.parquet")
    truth = pa.table({
        "video_id": cat.video_ids,
        "topic": [cat.topic_keys[t] for t in cat.topic],
        "word": [cat.topic_word[t] for t in cat.topic],
        "domain": [cat.topic_domain[t] for t in cat.topic],
        "dominant": [cat.topic_dominant[t] for t in cat.topic],
        "subtopic": cat.subtopic.astype(np.int8),
    })
    storage.write_table(truth, f"{out}/eval/video_truth.parquet")
    storage.write_table(pa.Table.from_pylist(cat.queries), f"{out}/eval/queries.parquet")


def _world_stats(cat: Catalog, cfg: WorldConfig, results: list[dict], seconds: float) -> dict:
    total = {k: sum(r["stats"][k] for r in results) for k in results[0]["stats"]}
    return {
        "users": cfg.users,
        "videos": len(cat.video_ids),
        "queries": len(cat.queries),
        "ambiguous_words": len(V.WORDS),
        "senses": sum(1 for w in cat.topic_word if w),
        "requests": total["requests"],
        "search_log_rows": sum(r["search_rows"] for r in results),
        "clicks": total["clicks"],
        "reformulations": total["reformulations"],
        "topic_switches_within_window": total["topic_switches"],
        "late_followups": total["late_followups"],
        "rec_events": total["rec_events"],
        "ambiguous_requests": total["ambiguous_requests"],
        "ambiguous_intent_never_exposed": round(total["ambiguous_intent_unexposed"] / max(1, total["ambiguous_requests"]), 4),
        "eval_requests": total["eval_requests"],
        "eval_ct_pairs": len({p for r in results for p in r["ct"]}),
        "eval_qr_pairs": len({p for r in results for p in r["qr"]}),
        "seconds": round(seconds, 2),
    }


def format_stats(stats: dict) -> str:
    lines = ["| statistic | value |", "|---|---:|"]
    for k, v in stats.items():
        lines.append(f"| {k.replace('_', ' ')} | {v:,} |" if isinstance(v, int) else f"| {k.replace('_', ' ')} | {v} |")
    return "\n".join(lines)
