"""Labelled (query, video) pairs from the search log itself: what the gate learns from and is calibrated on.

A real platform has no ground truth, only its logs, so every label here is a rule over the validated
``search_log`` (and the corpus, for random negatives). The rules and why each stands for (ir)relevance:

- ``repeat_click`` (1): clicked for the query in at least ``min_click_requests`` requests. One click can be a
  position-biased accident; the same video chosen again in another request is repeated evidence.
- ``sibling`` (0): clicked for a *sibling* query and never clicked or shown for this one. A sibling shares a term
  with the query, but neither query's terms contain the other's ("jaguar cubs" and "jaguar hunting"; not "jaguar"
  and "jaguar cubs", where one refines the other), and no video was clicked for both (a shared click says the two
  are one intent typed two ways: "... slow motion" and "... asmr" of the same thing). A video the engine showed
  for the query and nobody clicked is left out too: in a position-biased log that is mostly a result nobody looked
  at, not a rejection (the same reason ``skipped`` is off). These are the same-topic, other-facet videos the gate
  exists to reject.
- ``skipped`` (0): shown (exposed) for the query in at least ``min_skips`` requests and never clicked for it. Off by
  default (``skipped_share`` 0): a log without positions cannot tell a skip from a result nobody looked at (click
  models: most non-clicks below the first few ranks are non-examinations), and the audit on the embedded world
  found these pairs relevant, not irrelevant (README). A log whose engine shows few, well-examined results may
  turn it on.
- ``random`` (0): a random video of the corpus never clicked for the query (the easy negatives, a few).

The gate trains on a balanced sample of these labels plus the mined (P1/P2) candidates the log labels (the pairs it
will decide, so the hard negatives it must reject are among them). Queries are split by a hash of their text
(:func:`query_split`, also the split of a user's or a world's labelled pairs): the gate is trained on one half and
calibrated on the other half's labelled candidates, so theta is measured on queries the model never saw.
Nothing here reads ``eval/`` or a generated world: :mod:`crops_ray.world.audit` measures these rules against a
world's truth afterwards, for the report only.
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import pandas as pd
import pyarrow as pa

from crops_ray.config import config
from crops_ray.sources import SHOWN_STAGES

UNLABELLED = -1
SHOWN_COUNTS = dict(zip(SHOWN_STAGES, ("clicks", "skips")))  # what a user saw, and the count each one adds to

LABELS_SCHEMA = pa.schema(
    [
        ("query", pa.string()),
        ("video_id", pa.string()),
        ("label", pa.int8()),
        ("rule", pa.string()),  # which rule labelled the pair: repeat_click (1), sibling, skipped, random (0)
        ("heldout", pa.bool_()),  # the query's side of the split: False trains the gate, True calibrates it
        ("origin", pa.string()),  # "sample" (the balanced sample) or "candidates" (mined candidates the log labels)
    ]
)

_TOKEN = re.compile(r"\w+", re.UNICODE)


def query_split(queries, heldout: bool) -> np.ndarray:
    """A stable half of the queries (by a hash of the text): fit on one half, measure on the other."""
    bucket = np.array([zlib.crc32(q.encode("utf-8")) % 2 for q in queries])
    return bucket == (1 if heldout else 0)


@config
class LogLabelConfig:
    min_click_requests: int = 2  # repeat_click: distinct requests with a click for the query
    # A log with fewer repeat_click pairs than this (a short log, a small site) counts single clicks instead,
    # and says so in stats.json: a gate trained on a few dozen pairs is worse than one trained on single clicks.
    min_positives: int = 300
    min_skips: int = 3  # skipped: requests that exposed the video for the query without a click
    positives_per_query: int = 8  # at most this many repeat_click pairs per query in the training sample
    negatives_per_positive: float = 1.5  # labelled negatives per positive, per query (the mix below)
    sibling_share: float = 0.7  # of the negatives: siblings first, ...
    skipped_share: float = 0.0  # ... then skipped videos (off: see the module's docstring), then random ones
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.min_click_requests, self.min_skips, self.positives_per_query) < 1 or self.min_positives < 0:
            raise ValueError("min_click_requests, min_skips and positives_per_query must be >= 1, min_positives >= 0")
        if self.negatives_per_positive <= 0:
            raise ValueError(f"negatives_per_positive must be > 0, got {self.negatives_per_positive}")
        if not (0 <= self.sibling_share and 0 <= self.skipped_share and self.sibling_share + self.skipped_share <= 1):
            raise ValueError("sibling_share and skipped_share must be >= 0 and add up to at most 1")


def terms(query: str) -> frozenset[str]:
    return frozenset(_TOKEN.findall(query.lower()))


def sibling_queries(queries) -> dict[str, set[str]]:
    """For each query, the queries sharing a term with it of which neither refines the other (term sets not
    nested). An inverted index over terms keeps this near-linear for a long-tailed query log."""
    bag = {q: terms(q) for q in queries}
    by_term: dict[str, list[str]] = {}
    for q, ts in bag.items():
        for t in ts:
            by_term.setdefault(t, []).append(q)
    out: dict[str, set[str]] = {}
    for q, ts in bag.items():
        near = {o for t in ts for o in by_term[t]}
        out[q] = {o for o in near if o != q and not (bag[o] <= ts or ts <= bag[o])}
    return out


class LogEvidence:
    """What the search log says about (query, video) pairs: requests with a click, requests that showed the video
    without one, and the sibling queries. Built once from the log's request_id, query, video_id and stage."""

    def __init__(self, search_log: pa.Table | pd.DataFrame, cfg: LogLabelConfig | None = None):
        self.cfg = cfg or LogLabelConfig()
        log = search_log if isinstance(search_log, pd.DataFrame) else search_log.to_pandas()
        shown = log.loc[log["stage"].isin(SHOWN_STAGES), ["query", "video_id", "stage", "request_id"]]
        per = shown.groupby(["query", "video_id", "stage"])["request_id"].nunique().unstack("stage", fill_value=0)
        for stage in SHOWN_STAGES:
            if stage not in per:
                per[stage] = 0
        self.pairs = per.rename(columns=SHOWN_COUNTS)[list(SHOWN_COUNTS.values())].reset_index()
        clicked = self.pairs[self.pairs["clicks"] > 0]
        self.clicked_for = clicked.groupby("query")["video_id"].agg(set).to_dict()
        self.shown_for = self.pairs.groupby("query")["video_id"].agg(set).to_dict()  # clicked or exposed
        never_clicked = self.pairs[(self.pairs["clicks"] == 0) & (self.pairs["skips"] >= self.cfg.min_skips)]
        self.skipped_for = never_clicked.groupby("query")["video_id"].agg(sorted).to_dict()
        self.clicked_by = clicked.groupby("video_id")["query"].agg(set).to_dict()
        # siblings that share no clicked video with the query: a co-click makes them one intent (a click graph's
        # oldest signal), and their videos no evidence against it
        self.siblings = {
            q: {o for o in sibs if self.clicked_for[o].isdisjoint(self.clicked_for[q])}
            for q, sibs in sibling_queries(self.clicked_for).items()
        }
        self.min_clicks = self.cfg.min_click_requests
        repeat = int((self.pairs["clicks"] >= self.min_clicks).sum())
        if repeat < self.cfg.min_positives and self.min_clicks > 1:
            self.min_clicks = 1  # too little repeated evidence in this log: single clicks (stats.json says so)
        self._counts = {
            (q, v): (c, s) for q, v, c, s in self.pairs[["query", "video_id", "clicks", "skips"]].itertuples(False)
        }

    def label(self, queries, video_ids) -> tuple[np.ndarray, list[str | None]]:
        """Per pair: 1, 0 or UNLABELLED, and the rule that decided it (None when none did)."""
        n = len(queries)
        labels = np.full(n, UNLABELLED, dtype=np.int8)
        rules: list[str | None] = [None] * n
        cfg = self.cfg
        for i, (q, v) in enumerate(zip(queries, video_ids)):
            clicks, skips = self._counts.get((q, v), (0, 0))
            if clicks >= self.min_clicks:
                labels[i], rules[i] = 1, "repeat_click"
            elif clicks:
                continue  # one click: neither rule's evidence
            elif not skips and not self.siblings.get(q, set()).isdisjoint(self.clicked_by.get(v, ())):
                labels[i], rules[i] = 0, "sibling"
            elif cfg.skipped_share > 0 and skips >= cfg.min_skips:
                labels[i], rules[i] = 0, "skipped"
        return labels, rules

    def training_sample(self, video_ids) -> pd.DataFrame:
        """A balanced sample (query, video_id, label, rule): per query with a repeat_click positive, up to
        ``positives_per_query`` of them and ``negatives_per_positive`` times as many negatives (siblings, skipped,
        then random by the configured shares)."""
        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed)
        video_ids = np.asarray(video_ids, dtype=object)
        pos = self.pairs[self.pairs["clicks"] >= self.min_clicks]
        pos = pos.sample(frac=1.0, random_state=cfg.seed).groupby("query").head(cfg.positives_per_query)
        rows = [(q, v, 1, "repeat_click") for q, v in zip(pos["query"], pos["video_id"])]
        for q, n_pos in pos.groupby("query").size().sort_index().items():
            n_neg = int(np.ceil(n_pos * cfg.negatives_per_positive))
            mine = self.clicked_for.get(q, set())
            taken: set[str] = set()
            sibs = sorted({v for s in self.siblings.get(q, ()) for v in self.clicked_for[s]} - self.shown_for[q])
            skipped = self.skipped_for.get(q, []) if cfg.skipped_share > 0 else []
            for rule, pool, share in (("sibling", sibs, cfg.sibling_share), ("skipped", skipped, cfg.skipped_share)):
                k = min(len(pool), int(round(n_neg * share)))
                for v in rng.choice(pool, size=k, replace=False) if k else ():
                    if v not in taken:
                        taken.add(v)
                        rows.append((q, v, 0, rule))
            for v in video_ids[rng.integers(len(video_ids), size=max(0, n_neg - len(taken)))]:
                if v not in mine and v not in taken:
                    taken.add(v)
                    rows.append((q, v, 0, "random"))
        return pd.DataFrame(rows, columns=["query", "video_id", "label", "rule"])


def build_log_labels(evidence: LogEvidence, video_ids, candidates: pd.DataFrame | None = None) -> pa.Table:
    """The gate's labelled pairs (LABELS_SCHEMA), split by query: the balanced sample, and the mined candidates
    (``candidates``: query, video_id) that the log labels, which are the pairs the gate will decide."""
    parts = [evidence.training_sample(video_ids).assign(origin="sample")]
    if candidates is not None and len(candidates):
        lab, rules = evidence.label(candidates["query"].tolist(), candidates["video_id"].tolist())
        known = lab != UNLABELLED
        parts.append(
            candidates.loc[known, ["query", "video_id"]].assign(
                label=lab[known], rule=[r for r, k in zip(rules, known) if k], origin="candidates"
            )
        )
    labels = pd.concat(parts, ignore_index=True).drop_duplicates(["query", "video_id"])
    labels["heldout"] = query_split(labels["query"].tolist(), heldout=True) if len(labels) else []
    labels["label"] = labels["label"].astype("int8")
    return pa.Table.from_pandas(labels[LABELS_SCHEMA.names], schema=LABELS_SCHEMA, preserve_index=False)
