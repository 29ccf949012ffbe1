"""The model behind theta, in one process: raw scores for (query, text) pairs, and theta when calibrated.

A cross-encoder (the default) is a sequence-classification folder with one logit per pair
(:mod:`crops_ray.discriminator.cross_encoder`); a bi-encoder discriminator is the training code's
:class:`crops_ray.encoder.Encoder` (shared towers, mean pooling, unit length: raw score = cosine). Either way the
calibration names the weights and the kind it was fitted on, and those are what load; :func:`fit_calibration` fits
one on a model's own scores.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa

from crops_ray.discriminator.calibration import Calibration, calibrated_weights, fit_on_scores
from crops_ray.discriminator.config import DiscriminatorConfig
from crops_ray.plumbing import EmbeddingCache


class Discriminator:
    def __init__(self, cfg: DiscriminatorConfig, calibration: Calibration | None = None, device: str | None = None):
        import torch

        if calibration is not None and calibration.kind != cfg.kind:  # the calibration names the kind it fits
            cfg = replace(cfg, kind=calibration.kind)
        self.cfg, self.calibration = cfg, calibration
        self.model_dir = calibrated_weights(calibration, cfg)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._similarity = None
        if cfg.kind == "bi-encoder":
            self.encoder = self._bi_encoder(self.model_dir)
            self._cache = EmbeddingCache(cfg.cache_size)  # a video in many pairs is encoded once
        else:
            from crops_ray.discriminator.cross_encoder import load, quantized

            self.int8 = calibration.int8 if calibration is not None else cfg.int8
            if self.int8:  # int8 linear layers run on the CPU: the calibration was fitted on these scores
                self.device = "cpu"
            self.tokenizer, self.model = load(self.model_dir, self.device)
            if self.int8:
                self.model = quantized(self.model)
        self.texts_encoded = 0  # forward-pass work actually done (cache misses; pairs for a cross-encoder)
        self.pairs_scored = 0

    def _bi_encoder(self, folder: str):
        from crops_ray.encoder import Encoder

        return Encoder.from_pretrained(folder, shared=True, max_length=self.cfg.max_length).to(self.device).eval()

    def _encode(self, texts: list[str]) -> np.ndarray:
        self.texts_encoded += len(texts)
        return self.encoder.encode_docs(texts, batch_size=self.cfg.encode_batch_size)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Normalised embeddings (bi-encoder); each distinct text is encoded once while it stays in the cache."""
        if not texts:
            return np.empty((0, self.encoder.dim), np.float32)
        return np.stack(self._cache.lookup(texts, self._encode))

    def raw_scores(self, queries: list[str], texts: list[str]) -> np.ndarray:
        if len(queries) != len(texts):
            raise ValueError(f"{len(queries)} queries but {len(texts)} texts")
        self.pairs_scored += len(queries)
        if not queries:
            return np.empty(0, dtype=np.float32)
        if self.cfg.kind == "bi-encoder":
            return np.einsum("ij,ij->i", self.embed(queries), self.embed(texts)).astype(np.float32)
        from crops_ray.discriminator.cross_encoder import logits

        self.texts_encoded += len(queries)
        batch = 1 if self.int8 else self.cfg.encode_batch_size  # int8: one pair per pass, its theta its own alone
        return logits(self.tokenizer, self.model, queries, texts, batch, self.cfg.max_length)

    def similarity(self, left: list[str], right: list[str]) -> np.ndarray:
        """Cosine of two texts' bi-encoder embeddings (P1's query-to-query gate): the gate's own encoder when it is a
        bi-encoder, else ``similarity_model`` (loaded on first use)."""
        if self.cfg.kind == "bi-encoder":
            return self.raw_scores(left, right)
        if self._similarity is None:
            self._similarity = Discriminator(replace(self.cfg, kind="bi-encoder", model=self.cfg.similarity_model))
        return self._similarity.raw_scores(left, right)

    def theta(self, queries: list[str], texts: list[str]) -> np.ndarray:
        if self.calibration is None:
            raise RuntimeError("theta needs a calibration (the one build_data wrote: discriminator_calibration.json)")
        return self.calibration.theta(self.raw_scores(queries, texts)).astype(np.float32)


def fit_calibration(
    disc: Discriminator, fit: pa.Table, heldout: pa.Table | None, source: str, alpha: float
) -> Calibration:
    """:func:`fit_on_scores` on ``disc``'s raw scores of ``fit``, measured on ``heldout``."""
    held = heldout if heldout is not None and heldout.num_rows else None
    return fit_on_scores(
        disc.raw_scores(fit["query"].to_pylist(), fit["text"].to_pylist()),
        fit["label"].to_numpy(),
        disc.model_dir,
        disc.cfg.kind,
        source,
        alpha,
        held_raw=None if held is None else disc.raw_scores(held["query"].to_pylist(), held["text"].to_pylist()),
        held_labels=None if held is None else held["label"].to_numpy(),
    )
