"""The paper's Table 2, simulated: an online A/B test of retrievers on the embedded world's users.

The paper's online test (Kuaishou Search) swaps the dense retrieval channel and measures click-through rate,
long-play rate and query reformulation rate. Here each retriever becomes the platform's retrieval channel for a
fresh period of the same world:

- **Same users and behaviour.** Every user of the world (their interests from ``generator.user_interests``)
  runs ``sessions_per_user`` sessions. A session has an intent (topic, subtopic, angle, drawn by the world's
  Zipf popularity), a query as specific as the world's query mix, and the world's behaviour model:
  position-biased clicks by fit, a long play by fit, and, after a request without a click, a reformulation
  within 90 s to a more specific query (``generator.reformulation``), which goes through the same arm.
- **Same funnel.** An arm's retriever returns its top ``k`` for the query; the platform's ranker
  (``generator.rank``: relevance, the period's popularity, noise, the exposure bias on bare ambiguous words)
  orders them and the request shows 4-10 results. Only the candidate set differs between arms.
- **Common random numbers.** Every random draw (intent, query, ranker noise per video, the number of results,
  the click and long-play draws per position, the reformulation draw) comes from a per-session seed, not from
  the arm, so the arms differ only by their retriever, and two identical arms give identical figures.

Arms: each method's run (query -> top-k video ids), plus three built in: ``logging`` (the world's incumbent
engine, term based), ``oracle`` (the intent's own videos: exact angle first, then its subtopic, then its topic;
an upper bound) and ``random`` (k random videos: the floor).

Metrics, per arm (sums over users, so a user is the unit of the confidence intervals):
CTR = requests with a click / requests; LPR (long-play rate) = requests with a long play / requests;
RQR (query reformulation rate) = sessions that reformulated / sessions. Relative change against a baseline
arm with a 95% paired bootstrap interval over users (the same users in both arms), from the same scipy BCa
bootstrap as Table 1's (:func:`crops_ray.significance.relative_change_bootstrap`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crops_ray.config import config
from crops_ray.layout import WORLD_JSON
from crops_ray.report.markdown import rows_table
from crops_ray.significance import relative_change_bootstrap
from crops_ray.world import generator as G

BUILT_IN = ("oracle", "logging", "random")
METRICS = {
    "ctr": ("clicked_requests", "requests"),
    "lpr": ("long_play_requests", "requests"),
    "rqr": ("reformulated_sessions", "sessions"),
}


@config
class OnlineConfig:
    seed: int = 20_260_401  # the A/B period's seed: other draws than the world's own periods
    sessions_per_user: float = 2.0  # mean, Poisson; the world's evaluation period has 2 as well
    k: int = 100  # the retrieval channel's depth handed to the ranker (the paper's Recall@100)
    period: int = 1  # popularity of the world's evaluation period (the A/B runs after training)
    users: int | None = None  # default: every user of the world
    resamples: int = 2000
    confidence: float = 0.95


@dataclass
class _Session:
    user: int
    intent: tuple[int, int, int]
    queries: tuple[int, int]  # the first query, and the one a reformulation would type
    seed: int  # everything else drawn inside the request comes from this


def load_world(world: str) -> tuple[G.WorldConfig, G.Catalog]:
    """The world's config (``world.json``) and its catalog, rebuilt from the seed and checked against the videos."""
    import pyarrow.parquet as pq

    from crops_ray import schema as S
    from crops_ray.config import from_dict

    try:
        with open(f"{world}/{WORLD_JSON}") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{world} has no world.json: the online A/B test needs a world written by pipelines/generate_world.py"
        ) from None
    if meta.get("version") != G.WORLD_VERSION:
        raise ValueError(
            f"{world} was written by world generator version {meta.get('version', 1)}; this is version "
            f"{G.WORLD_VERSION}: regenerate it"
        )
    cfg = from_dict(G.WorldConfig, meta["config"])
    cat = G.build_catalog(cfg)
    ids = pq.read_table(S.table_files(world, "videos"), columns=["video_id"])["video_id"].to_pylist()
    if ids != cat.video_ids:
        raise ValueError(
            f"{world}: its videos differ from the catalog its world.json rebuilds (another generator version?)"
        )
    return cfg, cat


def plan_sessions(cfg: G.WorldConfig, cat: G.Catalog, ocfg: OnlineConfig) -> list[_Session]:
    """Every session of the A/B period, drawn once and shared by all arms."""
    weights = G.interest_weights(cat, cfg)
    sessions = []
    for u in range(ocfg.users or cfg.users):
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, ocfg.seed, u]))
        interests = G.user_interests(cfg, u, weights)
        for _ in range(rng.poisson(ocfg.sessions_per_user)):
            intent = G.choose_intent(cat, rng, G.choose_interest(rng, interests, cfg))
            q1 = G.query_for(cat, cfg, rng, intent)
            q2 = G.reformulation(cat, rng, q1, intent)
            sessions.append(_Session(u, intent, (q1, q2), int(rng.integers(2**62))))
    return sessions


def _oracle(cat: G.Catalog, intent: tuple[int, int, int], k: int) -> np.ndarray:
    videos = cat.topic_videos[intent[0]]
    fit = G.fit_level(cat, videos, intent)
    return videos[np.argsort(fit, kind="stable")][:k]


@dataclass
class _Draws:
    """The random numbers of one request, drawn before any arm sees it."""

    noise: np.ndarray  # the ranker's noise, one per video: a video gets the same noise in every arm
    n_exposed: int
    u_click: np.ndarray  # one per position
    u_long: np.ndarray

    @classmethod
    def make(cls, rng: np.random.Generator, cfg: G.WorldConfig, n_videos: int) -> "_Draws":
        return cls(
            rng.standard_normal(n_videos),
            int(rng.integers(cfg.exposed_range[0], cfg.exposed_range[1] + 1)),
            rng.random(cfg.exposed_range[1]),
            rng.random(cfg.exposed_range[1]),
        )


def _request(
    cat: G.Catalog,
    cfg: G.WorldConfig,
    ocfg: OnlineConfig,
    qi: int,
    cand: np.ndarray,
    intent,
    draws: _Draws,
    grades: np.ndarray,
) -> tuple[bool, bool]:
    """One request through the funnel: (clicked, long play)."""
    if len(cand) == 0:
        return False, False
    exposed = G.rank(cat, cfg, qi, cand, grades[cand], draws.noise[cand], ocfg.period)[: draws.n_exposed]
    clicked = draws.u_click[: len(exposed)] < G.click_probability(cat, cfg, exposed, intent)
    long_play = clicked & (draws.u_long[: len(exposed)] < np.asarray(cfg.long_play)[G.fit_level(cat, exposed, intent)])
    return bool(clicked.any()), bool(long_play.any())


def simulate(
    world: str,
    runs: dict[str, dict[str, list[str]]],
    ocfg: OnlineConfig | None = None,
    built_in: tuple = BUILT_IN,
    progress=print,
    loaded: tuple[G.WorldConfig, G.Catalog] | None = None,
    sessions: list[_Session] | None = None,
) -> pd.DataFrame:
    """Per-user counts for every arm: a frame with columns arm, user, requests, clicked_requests, ...

    ``runs``: arm name -> {query: top-k video ids}; it must cover every query of :func:`queries_needed`.
    ``sessions``: the planned sessions when the caller already has them (:func:`plan_sessions`).
    """
    ocfg = ocfg or OnlineConfig()
    cfg, cat = loaded or load_world(world)
    sessions = sessions if sessions is not None else plan_sessions(cfg, cat, ocfg)
    index = {v: i for i, v in enumerate(cat.video_ids)}
    arms = {
        name: {q: np.array([index[v] for v in vids[: ocfg.k] if v in index], dtype=np.int64) for q, vids in run.items()}
        for name, run in runs.items()
    }
    names = [*built_in, *arms]
    n_users = ocfg.users or cfg.users
    counts = np.zeros((len(names), n_users, 5), dtype=np.int64)  # requests, clicked, long play, sessions, reformulated
    grades: dict[int, np.ndarray] = {}
    started = time.time()
    for i, s in enumerate(sessions):
        rng = np.random.default_rng(s.seed)
        draws = [_Draws.make(rng, cfg, len(cat.video_ids)) for _ in range(2)]
        u_reformulate = rng.random()
        random_cand = [
            rng.choice(len(cat.video_ids), size=min(ocfg.k, len(cat.video_ids)), replace=False) for _ in range(2)
        ]
        for qi in s.queries:
            if qi not in grades:
                grades[qi] = G.query_grades(cat, cat.queries[qi])
        for a, arm in enumerate(names):
            c = counts[a, s.user]
            c[3] += 1
            for step, qi in enumerate(s.queries):
                if arm == "oracle":
                    cand = _oracle(cat, s.intent, ocfg.k)
                elif arm == "logging":
                    cand = G.engine_candidates(cat, qi)[0]
                elif arm == "random":
                    cand = random_cand[step]
                else:
                    query = cat.queries[qi]["query"]
                    if query not in arms[arm]:
                        raise KeyError(f"arm {arm!r} has no results for query {query!r}: run it on queries_needed()")
                    cand = arms[arm][query]
                clicked, long_play = _request(cat, cfg, ocfg, qi, cand, s.intent, draws[step], grades[qi])
                c[0] += 1
                c[1] += clicked
                c[2] += long_play
                if clicked or u_reformulate >= cfg.reformulate_rate:
                    break  # satisfied, or gave up: no reformulation
                if step == 0:
                    c[4] += 1
        if (i + 1) % max(1, len(sessions) // 4) == 0:
            progress(
                f"online A/B: {i + 1:,}/{len(sessions):,} sessions x {len(names)} arms ({time.time() - started:.0f}s)"
            )
    frames = []
    for a, arm in enumerate(names):
        frame = pd.DataFrame(
            counts[a],
            columns=["requests", "clicked_requests", "long_play_requests", "sessions", "reformulated_sessions"],
        )
        frame.insert(0, "user", np.arange(n_users))
        frame.insert(0, "arm", arm)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def queries_needed(
    world: str,
    ocfg: OnlineConfig | None = None,
    loaded: tuple[G.WorldConfig, G.Catalog] | None = None,
    sessions: list[_Session] | None = None,
) -> list[str]:
    """The queries the A/B period's sessions can type (first queries and their reformulations)."""
    ocfg = ocfg or OnlineConfig()
    cfg, cat = loaded or load_world(world)
    sessions = sessions if sessions is not None else plan_sessions(cfg, cat, ocfg)
    needed = {qi for s in sessions for qi in s.queries}
    return sorted(cat.queries[qi]["query"] for qi in needed)


def summarize(counts: pd.DataFrame, baseline: str, ocfg: OnlineConfig | None = None) -> pd.DataFrame:
    """Per arm: CTR, LPR, RQR and each one's relative change vs ``baseline`` with a paired 95% CI over users."""
    ocfg = ocfg or OnlineConfig()
    arms = list(dict.fromkeys(counts["arm"]))
    if baseline not in arms:
        raise ValueError(f"baseline arm {baseline!r} is not among {arms}")
    by_arm = {a: counts[counts["arm"] == a].sort_values("user") for a in arms}
    base = by_arm[baseline]
    out = []
    for arm in arms:
        row = {"arm": arm}
        for metric, (num, den) in METRICS.items():
            a_num, a_den = by_arm[arm][num].to_numpy(float), by_arm[arm][den].to_numpy(float)
            b_num, b_den = base[num].to_numpy(float), base[den].to_numpy(float)
            value, base_value = a_num.sum() / a_den.sum(), b_num.sum() / b_den.sum()
            # Table 1's bootstrap, over users; one seed for every arm and metric, so all resample the same users.
            ci = relative_change_bootstrap(
                a_num, a_den, b_num, b_den, resamples=ocfg.resamples, confidence=ocfg.confidence, seed=ocfg.seed
            )
            row[metric] = value
            row[f"{metric}_rel"] = value / base_value - 1
            row[f"{metric}_rel_low"], row[f"{metric}_rel_high"] = ci.low, ci.high
        out.append(row)
    return pd.DataFrame(out)


def table2_markdown(summary: pd.DataFrame, baseline: str, labels: dict[str, str] | None = None) -> str:
    labels = labels or {}
    rows = []
    for r in summary.itertuples(index=False):
        row = {"Arm": labels.get(r.arm, r.arm)}
        for metric, name in (("ctr", "CTR"), ("lpr", "LPR"), ("rqr", "RQR")):
            value, rel, low, high = (
                getattr(r, metric),
                getattr(r, f"{metric}_rel"),
                getattr(r, f"{metric}_rel_low"),
                getattr(r, f"{metric}_rel_high"),
            )
            row[name] = f"{100 * value:.2f}%"
            row[f"{name} vs {labels.get(baseline, baseline)}"] = (
                "-" if r.arm == baseline else f"{100 * rel:+.2f}% [{100 * low:+.2f}, {100 * high:+.2f}]"
            )
        rows.append(row)
    return rows_table(rows)
