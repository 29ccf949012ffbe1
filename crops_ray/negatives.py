"""Hard negatives mined from the model's own index: the ANCE, ADORE+STAR and TriSampler baselines of Table 1.

Each rule is a pure function over arrays (tested without Ray or a model); :class:`NegativeMiner` is the state one
training worker keeps (the corpus, its FAISS index, the labelled positives, a snapshot of the query tower) and asks
for every batch. The trainer adds the mined videos to the batch as extra candidate columns at label 0
(:func:`crops_ray.train.append_candidates`), so the loss is DPR's InfoNCE with more negatives: every baseline
differs from DPR by its negatives only (same samples, budget, initialisation and loss).

**The index.** Mining needs the frozen document tower (``TrainConfig.doc_tower = "frozen"``, the CPU demo's
setting): the corpus is encoded once (the evaluation's encoding, also the trainer's ``DocCache`` prefill) and the
model's "ANN index" is an exact FAISS inner-product index over those fixed vectors. A refresh therefore re-encodes
nothing (the frozen tower would give the same vectors) but re-queries it with the query tower of the moment.
Mining with a trained document tower (the corpus re-encoded at each refresh) is not implemented.

**Never a negative** (every rule): a labelled positive of the query (any sample at ``positive_level`` = 3 or above,
or clicked: :func:`labelled_positives`), a candidate of the row's own group (already a column), and any video
whose text is one of theirs (an identical text has an identical embedding).

**The rules** (``NegativeConfig.rule``; k = ``k`` = 200, n = ``num_negatives`` = 7 per query and step):

- ``ance`` (Xiong et al., ICLR 2021): the top k of the index for a snapshot of the query tower taken every
  ``refresh_every`` = 50 steps (the "recent checkpoint"; the first, at step 0, is the initial model), positives
  excluded; n drawn uniformly without replacement (:func:`uniform_negatives`).
- ``star_adore`` (Zhan et al., SIGIR 2021): STAR for the first ``star_share`` = half of the steps: n drawn
  uniformly from the top k of the warm-up model (the initial model, every method's initialisation), retrieved once
  and never refreshed (static), beside the in-batch random negatives every method has. Then ADORE: the query tower
  trains against the fixed document index with dynamic hard negatives, the n top-ranked non-positives of the
  query embedding the loss uses at that step (:func:`top_negatives`).
- ``trisampler`` (Yang et al., AAAI 2024, arXiv 2402.11855): the top k as for ``ance`` (same refresh), kept only
  inside the quasi-triangular region of the query q and the row's positive d+ (its group's anchor):
  ``theta = |arccos cos(q, d+) - arccos cos(q, d-)| <= max_angle`` = 60 degrees (:func:`quasi_triangle_angle`);
  n sampled without replacement with the product of the paper's two distributions
  ``p(d-) ~ exp(-(s- - s+)^2 / score_width) * ReLU(cos(d+, d-) - cos(q, d-))``, score_width = 4: scores near the
  positive's, and negatives closer to the positive than to the query (:func:`trisampler_weights`); where the ReLU
  factor is 0 for every candidate of the region, the first alone. ``s = cos / temperature`` (0.05) is the score the
  loss sees: the paper's scores are unnormalised inner products, on the scale of logits rather than of cosines.

Departures from the originals, for one harness on CPUs: a frozen document tower (above); InfoNCE for all three
(STAR and ADORE train a pairwise loss, ADORE's weighted by the change in MRR); ANCE and TriSampler start from the
pretrained model rather than from a warmed-up checkpoint, as every method here does.
"""

from __future__ import annotations

import copy

import numpy as np
import pyarrow as pa

from crops_ray.config import config
from crops_ray.hla import stable_hash
from crops_ray.sources import Source

RULES = ("none", "ance", "star_adore", "trisampler")


@config
class NegativeConfig:
    rule: str = "none"  # one of RULES; "none" mines nothing (every other method)
    k: int = 200  # the top k of the index each rule draws from (ANCE's and STAR's 200)
    num_negatives: int = 7  # mined per query and step: as many as a training group's companions (group_size - 1)
    refresh_every: int = 50  # ance, trisampler: steps between two snapshots of the query tower (3 in 150 steps)
    star_share: float = 0.5  # star_adore: the share of the steps trained as STAR, the rest as ADORE
    max_angle: float = 60.0  # trisampler: the quasi-triangular boundary, degrees
    score_width: float = 4.0  # trisampler: p ~ exp(-(s- - s+)^2 / score_width), s = cos / temperature
    positive_level: int = 3  # samples at this level or above (and every click) are labelled positives
    corpus: str | None = None  # parquet (video_id, text, embedding) through the frozen tower; default doc_embeddings
    positives: str | None = None  # parquet (query, video_id) of labelled positives: labelled_positives()

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown negatives rule {self.rule!r}; choose one of {list(RULES)}")
        counts = {"k": self.k, "num_negatives": self.num_negatives, "refresh_every": self.refresh_every}
        bad = {k: v for k, v in counts.items() if not isinstance(v, int) or v < 1}
        if bad:
            raise ValueError(f"NegativeConfig: these settings must be integers >= 1: {bad}")
        if not 0 < self.star_share < 1:
            raise ValueError(f"NegativeConfig.star_share must be in (0, 1), got {self.star_share}")
        if not 0 < self.max_angle <= 180 or self.score_width <= 0:
            raise ValueError("NegativeConfig: max_angle must be in (0, 180] degrees and score_width > 0")


# ------------------------------------------------------------------------------------------- the rules


def labelled_positives(samples: pa.Table, positive_level: int = 3) -> pa.Table:
    """``(query, video_id)`` of every sample at ``positive_level`` or above or clicked: never a mined negative."""
    level = samples["level"].to_numpy(zero_copy_only=False)
    clicked = np.array([s == Source.CLICKED for s in samples["source"].to_pylist()], dtype=bool)
    keep = (level >= positive_level) | clicked
    kept = samples.filter(pa.array(keep)).select(["query", "video_id"]).to_pandas().drop_duplicates()
    return pa.Table.from_pandas(kept, preserve_index=False)


def search_pools(index, queries: np.ndarray, k: int, excluded: list[set[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query row: the corpus rows of its top ``k`` (best first) minus ``excluded[i]``, and their scores."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    scores, rows = index.search(q, min(k, index.ntotal))
    pools = []
    for row_scores, row_ids, skip in zip(scores, rows, excluded):
        keep = (row_ids >= 0) & ~np.isin(row_ids, np.fromiter(skip, np.int64, len(skip)))
        pools.append((row_ids[keep].astype(np.int64), row_scores[keep].astype(np.float32)))
    return pools


def uniform_negatives(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """ANCE, STAR: ``n`` of the pool drawn uniformly without replacement (all of it when smaller)."""
    return rng.choice(pool, size=min(n, len(pool)), replace=False) if len(pool) else pool[:0]


def top_negatives(pool: np.ndarray, n: int) -> np.ndarray:
    """ADORE: the ``n`` best-ranked of a pool ordered best first."""
    return pool[:n]


def quasi_triangle_angle(cos_q_pos, cos_q_neg) -> np.ndarray:
    """TriSampler's angle, degrees: ``|arccos cos(q, d+) - arccos cos(q, d-)|``."""
    clip = lambda c: np.clip(np.asarray(c, dtype=np.float64), -1.0, 1.0)  # noqa: E731
    return np.degrees(np.abs(np.arccos(clip(cos_q_pos)) - np.arccos(clip(cos_q_neg))))


def trisampler_weights(
    cos_q_neg: np.ndarray,
    cos_q_pos: float,
    cos_pos_neg: np.ndarray,
    temperature: float,
    max_angle: float = 60.0,
    score_width: float = 4.0,
) -> np.ndarray:
    """Unnormalised sampling weights of the candidates d- of one query q with positive d+ (0 outside the region).

    ``exp(-((cos(q,d-) - cos(q,d+)) / temperature)^2 / score_width) * ReLU(cos(d+,d-) - cos(q,d-))`` inside
    ``quasi_triangle_angle <= max_angle``; where the ReLU factor is 0 for every candidate of the region, the first
    factor alone (so a query whose region is not empty still gets negatives).
    """
    cos_q_neg = np.asarray(cos_q_neg, dtype=np.float64)
    inside = quasi_triangle_angle(cos_q_pos, cos_q_neg) <= max_angle
    near_positive_score = np.exp(-(((cos_q_neg - cos_q_pos) / temperature) ** 2) / score_width)
    closer_to_positive = np.maximum(np.asarray(cos_pos_neg, dtype=np.float64) - cos_q_neg, 0.0)
    weights = np.where(inside, near_positive_score * closer_to_positive, 0.0)
    if not weights.any():
        weights = np.where(inside, near_positive_score, 0.0)
    return weights


def weighted_negatives(pool: np.ndarray, weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` of the pool drawn without replacement with probability ~ ``weights``; weight 0 is never drawn."""
    candidates = np.flatnonzero(np.asarray(weights) > 0)
    if not len(candidates):
        return pool[:0]
    # Efraimidis-Spirakis: the n largest u ** (1 / w), as in hla's companion sampling.
    keys = np.log(rng.random(len(candidates))) / np.asarray(weights, dtype=np.float64)[candidates]
    return pool[candidates[np.argsort(-keys, kind="stable")[:n]]]


# ------------------------------------------------------------------------------------- the worker's miner


class NegativeMiner:
    """One worker's mining state: ``negatives(encoder, rows, q, step)`` gives every batch row its mined videos."""

    def __init__(self, cfg: NegativeConfig, temperature: float, total_steps: int, seed: int = 0):
        from crops_ray import storage
        from crops_ray.index import VectorIndex

        if cfg.rule == "none" or not cfg.corpus or not cfg.positives:
            raise ValueError("NegativeMiner needs a rule, the corpus embeddings (corpus) and the labelled positives")
        self.cfg, self.temperature, self.seed = cfg, temperature, seed
        try:
            corpus = storage.read_table(cfg.corpus, columns=["video_id", "text", "embedding"])
        except (KeyError, pa.ArrowInvalid) as exc:
            raise ValueError(
                f"negatives.corpus {cfg.corpus}: needs columns video_id, text, embedding "
                f"(crops_ray.experiment.frozen_doc_embeddings writes them): {exc}"
            ) from exc
        self.ids, self.texts = corpus["video_id"].to_pylist(), corpus["text"].to_pylist()
        self.embeddings = np.ascontiguousarray(
            corpus["embedding"].combine_chunks().flatten().to_numpy().reshape(corpus.num_rows, -1), dtype=np.float32
        )
        self.index = VectorIndex.build(self.ids, self.embeddings).index  # exact inner product = cosine
        self.row_of = {v: i for i, v in enumerate(self.ids)}
        by_text: dict[str, list[int]] = {}
        for i, text in enumerate(self.texts):
            by_text.setdefault(text, []).append(i)
        self._same_text = by_text
        positives = storage.read_table(cfg.positives, columns=["query", "video_id"]).to_pydict()
        self.positives: dict[str, set[int]] = {}
        for query, video in zip(positives["query"], positives["video_id"]):
            self.positives.setdefault(query, set()).update(self.rows_of([video]))
        self.star_steps = round(cfg.star_share * total_steps)
        self._generation, self._snapshot, self._pools = None, None, {}
        self.refreshes = 0  # snapshots taken (index refreshes)

    def rows_of(self, video_ids) -> set[int]:
        """Corpus rows of these videos and of every video with the same text as one of them."""
        rows = set()
        for v in video_ids:
            r = self.row_of.get(v)
            if r is not None:
                rows.update(self._same_text[self.texts[r]])
        return rows

    def mode(self, step: int) -> tuple[str, int]:
        """``("snapshot", generation)``: mine with the snapshot of that generation; ``("dynamic", step)``: with
        the step's own query embeddings (ADORE)."""
        if self.cfg.rule == "star_adore":
            return ("snapshot", 0) if step < self.star_steps else ("dynamic", step)
        return "snapshot", step // self.cfg.refresh_every

    def _refresh(self, encoder, generation: int) -> None:
        from crops_ray.encoder import Encoder

        tower = copy.deepcopy(encoder.query_model).eval().requires_grad_(False)
        self._snapshot = Encoder(tower, None, encoder.tokenizer, copy.copy(encoder.config))
        self._generation, self._pools = generation, {}
        self.refreshes += 1

    def negatives(self, encoder, rows: dict, q, step: int) -> list[list[int]]:
        """Corpus rows mined for each row of a batch (``rows``: the batch's columns query, video_ids; ``q``: the
        step's query embeddings [B, dim], used by ADORE; ``encoder``: the model, snapshotted at each refresh)."""
        queries = [str(x) for x in rows["query"]]
        mode, generation = self.mode(step)
        if mode == "dynamic":
            emb = q.detach().float().cpu().numpy()
            pools = search_pools(self.index, emb, self.cfg.k, [self.positives.get(x, set()) for x in queries])
            found = [(rows_, scores, e) for (rows_, scores), e in zip(pools, emb)]
        else:
            if generation != self._generation:
                self._refresh(encoder, generation)
            missing = list(dict.fromkeys(x for x in queries if x not in self._pools))
            if missing:
                emb = self._snapshot.encode_queries(missing)
                pools = search_pools(self.index, emb, self.cfg.k, [self.positives.get(x, set()) for x in missing])
                for x, (rows_, scores), e in zip(missing, pools, emb):
                    self._pools[x] = (rows_, scores, e)
            found = [self._pools[x] for x in queries]
        out = []
        for i, (query, videos, (pool, scores, emb)) in enumerate(zip(queries, rows["video_ids"], found)):
            own = self.rows_of(list(videos))
            keep = ~np.isin(pool, np.fromiter(own, np.int64, len(own)))
            pool, scores = pool[keep], scores[keep]
            rng = np.random.default_rng([self.seed, stable_hash(query), step, i])
            out.append(self._pick(pool, scores, emb, videos, mode, rng).tolist())
        return out

    def _pick(self, pool, scores, emb, videos, mode, rng) -> np.ndarray:
        n = self.cfg.num_negatives
        if self.cfg.rule == "trisampler":
            anchor = self.row_of.get(str(videos[0])) if len(videos) else None
            if anchor is None:  # no positive to place the region around
                return pool[:0]
            positive = self.embeddings[anchor]
            weights = trisampler_weights(
                scores,
                float(emb @ positive),
                self.embeddings[pool] @ positive,
                self.temperature,
                self.cfg.max_angle,
                self.cfg.score_width,
            )
            return weighted_negatives(pool, weights, n, rng)
        if mode == "dynamic":
            return top_negatives(pool, n)
        return uniform_negatives(pool, n, rng)
