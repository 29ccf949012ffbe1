"""The inverted index of a sparse retriever: postings in a scipy CSR matrix, exact top-k, and its audit.

    index = SparseIndex.build(ids, doc_codes)          # doc_codes: scipy [n, dim], at most k non-zeros per row
    ranked, scores = index.search(query_codes, k=100)  # exact: the same top-k as scoring every document
    index.audit(query_codes)                           # latents never used, longest posting, multiply-adds per query

Row ``j`` of the postings matrix is latent ``j``'s posting list: the documents whose code uses ``j`` and their
weights. A query's scores are the sum of its latents' posting lists, weighted (scipy's sparse product does exactly
that: it reads only the postings of the query's non-zeros), so a query costs the length of its posting lists in
multiply-adds, not ``n * dim``. Ties are broken by the document's row in the index, and documents a query shares
no latent with score 0 and fill the list after the scored ones in that order, as brute force would rank them.

Saved as ``postings.npz`` (scipy), ``ids.parquet`` and ``index.json`` (``"kind": "sparse"``, the audit, and what
built it, as a dense index records it).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from crops_ray.layout import INDEX_IDS, INDEX_JSON, SPARSE_POSTINGS

KIND = "sparse"


def as_codes(codes, dim: int | None = None) -> sp.csr_matrix:
    """``codes`` (a scipy matrix or a dense [n, dim] array of mostly zeros) as float32 CSR."""
    matrix = sp.csr_matrix(codes, dtype=np.float32)
    if dim is not None and matrix.shape[1] != dim:
        raise ValueError(f"codes have {matrix.shape[1]} latents, the index {dim}")
    matrix.eliminate_zeros()
    return matrix


class SparseIndex:
    def __init__(self, postings: sp.csr_matrix, ids: list[str], meta: dict | None = None):
        self.postings, self.ids = postings, ids  # postings: [dim, n], row j = latent j's posting list
        self.meta = dict(meta or {})

    @property
    def dim(self) -> int:
        return int(self.postings.shape[0])

    @classmethod
    def build(cls, ids: list[str], doc_codes) -> "SparseIndex":
        codes = as_codes(doc_codes)
        if codes.shape[0] != len(ids):
            raise ValueError(f"doc_codes must have one row per id ({len(ids)}), got {codes.shape[0]}")
        return cls(codes.T.tocsr(), list(ids))

    def search(self, query_codes, k: int, chunk: int = 256) -> tuple[list[list[str]], np.ndarray]:
        """Top-k video ids and scores per query row, best first (``min(k, n)`` each; scores padded with 0)."""
        queries = as_codes(query_codes, self.dim)
        k = min(k, len(self.ids))
        ranked, scores = [], np.zeros((queries.shape[0], k), dtype=np.float32)
        for start in range(0, queries.shape[0], chunk):
            block = (queries[start : start + chunk] @ self.postings).tocsr()  # [m, n]: only the postings read
            block.sort_indices()
            for r in range(block.shape[0]):
                rows, values = self._top(block, r, k)
                ranked.append([self.ids[i] for i in rows])
                scores[start + r, : len(values)] = values
        return ranked, scores

    def _top(self, block: sp.csr_matrix, r: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = block.indptr[r], block.indptr[r + 1]
        docs, values = block.indices[lo:hi], block.data[lo:hi]
        positive = values > 0
        docs, values = docs[positive], values[positive]
        if len(docs) > k:
            keep = np.argpartition(-values, k - 1)[:k]
            cut = values[keep].min()  # every document tied with the k-th is a candidate: the lowest rows win
            keep = np.flatnonzero(values >= cut)
            docs, values = docs[keep], values[keep]
        order = np.lexsort((docs, -values))[:k]
        docs, values = docs[order], values[order]
        if len(docs) < k:  # the rest score 0: the lowest rows not yet ranked, as brute force orders ties
            unscored = np.setdiff1d(np.arange(min(len(self.ids), k + len(docs))), docs, assume_unique=False)
            docs = np.concatenate([docs, unscored[: k - len(docs)]])
        return docs, values

    # ------------------------------------------------------------------------------------------------- audit

    def audit(self, query_codes=None) -> dict:
        """What the index costs: latents never used, the longest posting list as a share of the corpus, non-zeros
        per document, and with ``query_codes`` the mean multiply-adds per query (the summed lengths of its
        latents' posting lists) against a dense flat search's ``n * dim``."""
        lengths = np.diff(self.postings.indptr)
        per_doc = np.bincount(self.postings.indices, minlength=len(self.ids))
        n = max(1, len(self.ids))
        stats = {
            "documents": len(self.ids),
            "latents": self.dim,
            "unused_latents": float(np.mean(lengths == 0)),
            "longest_posting_share": float(lengths.max() / n) if len(lengths) else 0.0,
            "nonzeros_per_doc_mean": float(per_doc.mean()) if len(per_doc) else 0.0,
            "nonzeros_per_doc_max": int(per_doc.max()) if len(per_doc) else 0,
            "postings": int(self.postings.nnz),
        }
        if query_codes is not None:
            queries = as_codes(query_codes, self.dim)
            madds = queries.astype(bool).astype(np.float64) @ lengths.astype(np.float64)
            stats["multiply_adds_per_query"] = float(np.mean(madds)) if len(madds) else 0.0
            stats["nonzeros_per_query_mean"] = float(np.mean(np.diff(queries.indptr))) if queries.shape[0] else 0.0
        return stats

    # ---------------------------------------------------------------------------------------- save and load

    def save(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        sp.save_npz(f"{folder}/{SPARSE_POSTINGS}", self.postings)
        pq.write_table(pa.table({"video_id": self.ids}), f"{folder}/{INDEX_IDS}")
        info = {"kind": KIND, "size": len(self.ids), "dim": self.dim, **self.meta}
        with open(f"{folder}/{INDEX_JSON}", "w") as f:
            json.dump(info, f, indent=2)

    @classmethod
    def load(cls, folder: str) -> "SparseIndex":
        for name in (SPARSE_POSTINGS, INDEX_IDS, INDEX_JSON):
            if not os.path.exists(f"{folder}/{name}"):
                raise FileNotFoundError(f"{folder}: not a sparse index folder (missing {name})")
        with open(f"{folder}/{INDEX_JSON}") as f:
            info = json.load(f)
        if info.get("kind") != KIND:
            raise ValueError(f"{folder}: index.json says kind {info.get('kind')!r}, not {KIND!r}")
        meta = {k: v for k, v in info.items() if k not in ("kind", "size", "dim")}
        postings = sp.load_npz(f"{folder}/{SPARSE_POSTINGS}").tocsr()
        return cls(postings, pq.read_table(f"{folder}/{INDEX_IDS}")["video_id"].to_pylist(), meta)


def is_sparse_index(folder: str) -> bool:
    """Whether ``folder`` holds a sparse index (its index.json says so)."""
    try:
        with open(f"{folder}/{INDEX_JSON}") as f:
            return json.load(f).get("kind") == KIND
    except FileNotFoundError:
        return False
