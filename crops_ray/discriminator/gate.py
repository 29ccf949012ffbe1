"""The gate theta(q, d) > alpha, trained and calibrated on the logs it gates.

Two steps, both from the user's own data, never from ``eval/`` or a generated world:

1. :func:`train_gate` fits the model on labelled pairs: the user's own labelled pairs when given
   (``labelled_pairs``: the preferred source, fitted on one half of its queries), else the pairs the search log
   labels itself (:mod:`crops_ray.discriminator.log_labels`, the training half of the queries). The trained folder
   is cached under a key of its inputs' content.
2. :func:`calibrate_gate` turns raw scores into theta on pairs drawn like the ones the gate decides: the mined
   (P1/P2) candidates of the held-out queries that the log labels (a repeat click, a sibling's click), each
   source on its own candidates, so that ``theta > 0.6`` keeps pairs about 60 % likely to be relevant among that
   source's candidates, not among a balanced set. (Moving a calibration fitted on a balanced set to the
   candidates' base rate by EM over their unlabelled scores was tried and collapsed to a base rate of 0 on the
   small world: the pairs the log can label are not drawn like the rest, their negatives score higher.)

The precision of what the gate keeps, estimated from the logs alone, is the mean theta of the kept pairs
(summed per batch by :func:`crops_ray.engine.summary.candidate_counts`); ``stats.json`` shows it per source, and
on a generated world the audit puts the true one beside it.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd
import pyarrow as pa

from crops_ray import storage
from crops_ray.discriminator.calibration import (
    Calibration,
    expected_calibration_error,
    fit_on_scores,
    read_labelled_pairs,
)
from crops_ray.discriminator.config import DiscriminatorConfig
from crops_ray.discriminator.log_labels import UNLABELLED, LogEvidence, build_log_labels, query_split
from crops_ray.plumbing import cache_dir, model_path, weights_fingerprint
from crops_ray.sources import GATED_SOURCES

MIN_PER_CLASS = 30  # labelled candidates of each class below which the held-out sample joins the calibration set


def _digest(table: pa.Table) -> str:
    h = hashlib.sha1()
    for col in ("query", "text", "label"):
        for chunk in table[col].chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(memoryview(buf))
    return h.hexdigest()


def _training_key(cfg: DiscriminatorConfig) -> str:
    return (
        f"{cfg.kind}-ft{cfg.fine_tune_epochs}x{cfg.fine_tune_batch_size}lr{cfg.fine_tune_lr:g}s{cfg.fine_tune_seed}"
        f"L{cfg.max_length}"
    )


def train_model(cfg: DiscriminatorConfig, fit: pa.Table, progress=print) -> str:
    """The gate's weights trained on ``fit`` (query, text, label): a cross-encoder, or the fine-tuned bi-encoder
    (``fine_tune``; the packaged one as is without it). Cached: the same weights, settings and pairs are trained
    once per machine."""
    if not cfg.fine_tune:
        folder = model_path(cfg.model)
        if cfg.kind == "cross-encoder" and not _is_classifier(folder):
            raise ValueError(
                f"discriminator.fine_tune is off but {cfg.model} is not a trained cross-encoder (no classification "
                "head): turn fine_tune on to train one on your labels, or name a sequence-classification folder"
            )
        return folder
    key = hashlib.sha1(f"{weights_fingerprint(model_path(cfg.model))}|{_training_key(cfg)}|{_digest(fit)}".encode())
    folder = os.path.join(cache_dir(cfg.cache_dir), "discriminators", f"gate-{key.hexdigest()[:16]}")
    with storage.key_lock(folder):  # a second run at once waits here, then finds the first one's weights
        if os.path.exists(os.path.join(folder, "config.json")):
            progress(f"the gate's weights for these labels are cached at {folder}")
            return folder
        progress(f"training the gate ({cfg.kind}) on {fit.num_rows:,} labelled pairs; cached at {folder}")
        if cfg.kind == "cross-encoder":
            from crops_ray.discriminator.cross_encoder import train_cross_encoder

            return train_cross_encoder(cfg, fit, folder, progress)
        from crops_ray.discriminator.fine_tune import fine_tune

        return fine_tune(cfg, fit, folder, progress)


def _is_classifier(folder: str) -> bool:
    import json

    with open(os.path.join(folder, "config.json")) as f:
        return any(a.endswith("ForSequenceClassification") for a in json.load(f).get("architectures") or [])


def with_text(labels: pa.Table, videos: pa.Table) -> pa.Table:
    """(query, video_id, label, ...) -> (query, text, label): the video's text joined in, unknown videos dropped."""
    text = dict(zip(videos["video_id"].to_pylist(), videos["text"].to_pylist()))
    ids = labels["video_id"].to_pylist()
    keep = pa.array([i for i, v in enumerate(ids) if text.get(v)], pa.int64())  # typed: an empty list is null
    return pa.table(
        {
            "query": labels["query"].take(keep),
            "text": pa.array([text[ids[i]] for i in keep.to_pylist()], pa.string()),
            "label": labels["label"].take(keep),
        }
    )


def train_gate(
    cfg: DiscriminatorConfig,
    search_log: pa.Table,
    videos: pa.Table,
    candidates: pd.DataFrame | None = None,
    progress=print,
):
    """Train the gate on the user's labelled pairs or on the log's own labels (a balanced sample and the mined
    ``candidates``, query and video_id, that the log labels; the training half of the queries). Returns (weights
    folder, the log's evidence or None, a dict for stats.json: where the labels came from, how many of each rule)."""
    if cfg.labelled_pairs:
        pairs = read_labelled_pairs(cfg.labelled_pairs)
        held = query_split(pairs["query"].to_pylist(), heldout=True)
        fit = pairs.filter(pa.array(~held)) if (~held).any() and held.any() else pairs
        info = {"labels": os.path.abspath(cfg.labelled_pairs), "train_pairs": fit.num_rows}
        return train_model(cfg, fit, progress), None, info
    evidence = LogEvidence(search_log.select(["request_id", "query", "video_id", "stage"]), cfg.log_labels)
    labels = build_log_labels(evidence, videos["video_id"].to_pylist(), candidates)
    train = labels.filter(pa.compute.invert(labels["heldout"]))
    fit = with_text(train, videos)
    if fit.num_rows > cfg.max_train_pairs:  # a seeded sample bounds the training time on a large log
        keep = np.sort(np.random.default_rng(cfg.fine_tune_seed).permutation(fit.num_rows)[: cfg.max_train_pairs])
        fit = fit.take(keep)
    rules = train.select(["origin", "rule"]).to_pandas().value_counts().to_dict()
    info = {
        "labels": "logs",
        "min_click_requests": evidence.min_clicks,
        "train_pairs": fit.num_rows,
        "train_queries": len(set(train["query"].to_pylist())),
        "train_by_rule": {f"{o}:{r}": int(v) for (o, r), v in sorted(rules.items())},
    }
    if fit.num_rows == 0 or len(set(fit["label"].to_pylist())) < 2:
        raise ValueError(
            "the search log labels too few pairs to train the gate (it needs videos clicked for a query in "
            f"{evidence.min_clicks}+ requests and clicks on sibling queries): pass your own labelled pairs "
            "(discriminator.labelled_pairs) or a calibration JSON (discriminator.calibration)"
        )
    progress(
        f"gate labels from the logs: {fit.num_rows:,} training pairs on {info['train_queries']:,} queries "
        f"({', '.join(f'{k} {v:,}' for k, v in info['train_by_rule'].items())}); positives need "
        f"{evidence.min_clicks}+ click requests"
    )
    held = labels.filter(labels["heldout"])
    sample = held.filter(pa.compute.equal(held["origin"], "sample"))
    return train_model(cfg, fit, progress), evidence, {**info, "_labels": labels, "_heldout_sample": sample}


def calibrate_gate(
    cfg: DiscriminatorConfig,
    model_dir: str,
    scored: pd.DataFrame,
    evidence: LogEvidence | None,
    heldout_sample: pa.Table | None,
    raw_of,
    alpha: float,
) -> tuple[Calibration, dict]:
    """theta for the gate in ``model_dir`` from its raw scores of the mined candidates.

    ``scored``: every scored candidate (query, video_id, raw, and the booleans reformulation and recommendation).
    With the log's evidence, the calibration set is the held-out queries' candidates that the log labels; the pooled
    (a, b) is fitted on all of them (plus the held-out sample pairs, scored by ``raw_of(queries, texts)``, when a
    class has fewer than MIN_PER_CLASS), and each source gets its own (a, b) from its own labelled candidates when
    it has MIN_PER_CLASS of each class. With the user's labelled pairs: their held-out half, pooled only.
    Returns the calibration and a dict for stats.json."""
    if evidence is None:  # the user's labelled pairs: their held-out half
        pairs = read_labelled_pairs(cfg.labelled_pairs)
        held = query_split(pairs["query"].to_pylist(), heldout=True)
        part = pairs.filter(pa.array(held)) if held.any() and (~held).any() else pairs
        raw = raw_of(part["query"].to_pylist(), part["text"].to_pylist())
        cal = _fit(raw, part["label"].to_numpy(), model_dir, cfg, os.path.abspath(cfg.labelled_pairs), alpha)
        return cal, {"calibration_set": "the labelled pairs' held-out queries", "calibration_pairs": len(raw)}
    held = scored[query_split(scored["query"].tolist(), heldout=True)]
    lab, rules = evidence.label(held["query"].tolist(), held["video_id"].tolist())
    known = lab != UNLABELLED
    labelled = held[known][["query", "video_id", "raw", *GATED_SOURCES]].assign(
        label=lab[known], rule=[r for r, k in zip(rules, known) if k]
    )
    raw, labels = labelled["raw"].to_numpy(), labelled["label"].to_numpy()
    info: dict = {"calibration_set": "held-out queries' mined candidates labelled by the logs"}
    if min(labels.sum(), len(labels) - labels.sum()) < MIN_PER_CLASS and heldout_sample is not None:
        extra = heldout_sample  # too few labelled candidates: the held-out queries' balanced sample joins
        raw = np.concatenate([raw, raw_of(extra["query"].to_pylist(), extra["text"].to_pylist())])
        labels = np.concatenate([labels, extra["label"].to_numpy()])
        info["calibration_set"] += f" + {extra.num_rows:,} held-out sample pairs (too few candidates labelled)"
    cal = _fit(raw, labels, model_dir, cfg, "logs", alpha)
    info.update(calibration_pairs=len(labels), calibration_positives=int(labels.sum()), sources={})
    cal.sources = {}
    for source in GATED_SOURCES:
        mine = labelled[labelled[source]]
        pos = int(mine["label"].sum())
        entry = {"labelled_pairs": len(mine), "positives": pos}
        if min(pos, len(mine) - pos) >= MIN_PER_CLASS:
            own = _fit(mine["raw"].to_numpy(), mine["label"].to_numpy(), model_dir, cfg, "logs", alpha)
            cal.sources[source] = {"a": own.a, "b": own.b, **entry}
            entry["ece"] = round(expected_calibration_error(own.theta(mine["raw"]), mine["label"]), 4)
        else:
            entry["calibration"] = f"pooled (fewer than {MIN_PER_CLASS} labelled candidates of a class)"
        info["sources"][source] = entry
    info["_calibration_set"] = labelled  # the labelled candidates, written beside the candidates
    return cal, info


def _fit(raw, labels, model_dir: str, cfg: DiscriminatorConfig, source: str, alpha: float) -> Calibration:
    labels = np.asarray(labels).astype(np.int8)
    if len(labels) == 0 or labels.min() == labels.max():
        raise ValueError(
            "the gate's calibration set needs relevant and irrelevant pairs; the logs label too few of the mined "
            "candidates: pass your own labelled pairs (discriminator.labelled_pairs)"
        )
    cal = fit_on_scores(raw, labels, model_dir, cfg.kind, source, alpha, held_raw=raw, held_labels=labels)
    cal.fitted_prior = round(float(labels.mean()), 4)
    cal.int8 = cfg.kind == "cross-encoder" and cfg.int8  # the raw scores it was fitted on came from that form
    return cal
