"""The model behind theta, in one process: raw scores for (query, text) pairs, and theta when calibrated.

A bi-encoder discriminator is the training code's :class:`crops_ray.encoder.Encoder` (shared towers, mean
pooling, unit length: raw score = cosine), so a fine-tuned discriminator is saved and loaded like any trained
encoder; a cross-encoder is any local sequence-classification folder (one logit per pair).
"""

from __future__ import annotations

import numpy as np

from crops_ray.discriminator.calibration import Calibration, calibrated_weights
from crops_ray.discriminator.config import DiscriminatorConfig
from crops_ray.plumbing import EmbeddingCache


class Discriminator:
    def __init__(self, cfg: DiscriminatorConfig, calibration: Calibration | None = None, device: str | None = None):
        import torch

        self.cfg, self.calibration = cfg, calibration
        self.model_dir = calibrated_weights(calibration, cfg)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if cfg.kind == "bi-encoder":
            from crops_ray.encoder import Encoder

            self.encoder = Encoder.from_pretrained(self.model_dir, shared=True, max_length=cfg.max_length)
            self.encoder.to(self.device).eval()
            self._cache = EmbeddingCache(cfg.cache_size)  # a video in many pairs is encoded once
        else:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            self.model = AutoModelForSequenceClassification.from_pretrained(self.model_dir).to(self.device).eval()
        self.texts_encoded = 0  # forward-pass work actually done (cache misses)
        self.pairs_scored = 0

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
        import torch

        out = np.empty(len(queries), dtype=np.float32)
        bs = self.cfg.encode_batch_size
        with torch.inference_mode():
            for start in range(0, len(queries), bs):
                enc = self.tokenizer(
                    queries[start : start + bs],
                    texts[start : start + bs],
                    padding=True,
                    truncation=True,
                    max_length=self.cfg.max_length,
                    return_tensors="pt",
                ).to(self.device)
                logits = self.model(**enc).logits
                out[start : start + bs] = (
                    (logits[:, -1] if logits.shape[-1] > 1 else logits[:, 0]).float().cpu().numpy()
                )
        self.texts_encoded += len(queries)
        return out

    def theta(self, queries: list[str], texts: list[str]) -> np.ndarray:
        if self.calibration is None:
            raise RuntimeError("theta needs a calibration (load_or_fit_calibration)")
        return self.calibration.theta(self.raw_scores(queries, texts)).astype(np.float32)
