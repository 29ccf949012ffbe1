"""The BM25 baseline over the same corpus, by the maintained ``bm25s`` package."""

from __future__ import annotations

import bm25s
import numpy as np


class BM25Retriever:
    def __init__(self, ids: list[str], texts: list[str], k1: float = 1.5, b: float = 0.75):
        self.ids = list(ids)
        self.model = bm25s.BM25(k1=k1, b=b)
        self.model.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)

    def search(self, queries: list[str], k: int) -> tuple[list[list[str]], np.ndarray]:
        k = min(k, len(self.ids))
        docs, scores = self.model.retrieve(
            bm25s.tokenize(queries, stopwords="en", show_progress=False), k=k, show_progress=False, n_threads=1
        )
        # bm25s pads with arbitrary documents at score 0 when fewer match: those are not retrieved.
        return [[self.ids[d] for d, s in zip(row, srow) if s > 0] for row, srow in zip(docs, scores)], scores
