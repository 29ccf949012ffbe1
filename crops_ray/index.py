"""The ANN index over the encoded corpus: FAISS, exact inner product by default.

Embeddings are L2-normalised, so inner product is cosine. ``flat`` is exact; ``ivf`` and ``hnsw`` trade
recall for speed on large corpora, and :meth:`VectorIndex.recall_against_exact` measures what they lose.
Saved as ``index.faiss`` plus ``ids.parquet`` (row i of the index is video ids[i]).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crops_ray.config import config
from crops_ray.layout import FAISS_INDEX, INDEX_IDS, INDEX_JSON

KINDS = ("flat", "ivf", "hnsw")


@config
class IndexConfig:
    kind: str = "flat"
    nlist: int = 0  # IVF lists; 0 = 4 * sqrt(n)
    nprobe: int = 16
    hnsw_m: int = 32
    ef_search: int = 128

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"IndexConfig.kind must be one of {KINDS}, got {self.kind!r}")


class VectorIndex:
    def __init__(self, index: faiss.Index, ids: list[str], cfg: IndexConfig, meta: dict | None = None):
        self.index, self.ids, self.cfg = index, ids, cfg
        self.meta = dict(meta or {})  # what built it: {"encoder": the document tower's fingerprint, "model": ...}

    @classmethod
    def build(cls, ids: list[str], embeddings: np.ndarray, cfg: IndexConfig | None = None) -> "VectorIndex":
        cfg = cfg or IndexConfig()
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or len(x) != len(ids):
            raise ValueError(f"embeddings must be [n, dim] with n = len(ids) = {len(ids)}, got {x.shape}")
        dim = x.shape[1]
        if cfg.kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif cfg.kind == "ivf":
            nlist = cfg.nlist or max(1, int(4 * np.sqrt(len(x))))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(x)
            index.nprobe = cfg.nprobe
        else:
            index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = cfg.ef_search
        index.add(x)
        return cls(index, list(ids), cfg)

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """Top-k video ids and scores per query row (fewer when the corpus is smaller than k)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        scores, rows = self.index.search(q, min(k, len(self.ids)))
        return [[self.ids[r] for r in row if r >= 0] for row in rows], scores

    def recall_against_exact(self, embeddings: np.ndarray, queries: np.ndarray, k: int) -> float:
        """Share of the exact top-k that this index returns (1.0 for ``flat``)."""
        exact = VectorIndex.build(self.ids, embeddings, IndexConfig("flat"))
        got, _ = self.search(queries, k)
        want, _ = exact.search(queries, k)
        return float(np.mean([len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(got, want)]))

    def save(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        faiss.write_index(self.index, f"{folder}/{FAISS_INDEX}")
        pq.write_table(pa.table({"video_id": self.ids}), f"{folder}/{INDEX_IDS}")
        with open(f"{folder}/{INDEX_JSON}", "w") as f:
            json.dump(
                {"config": asdict(self.cfg), "size": len(self.ids), "dim": self.index.d, **self.meta}, f, indent=2
            )

    @classmethod
    def load(cls, folder: str) -> "VectorIndex":
        for name in (FAISS_INDEX, INDEX_IDS, INDEX_JSON):
            if not os.path.exists(f"{folder}/{name}"):
                raise FileNotFoundError(f"{folder}: not an index folder (missing {name})")
        with open(f"{folder}/{INDEX_JSON}") as f:
            info = json.load(f)
        meta = {k: v for k, v in info.items() if k not in ("config", "size", "dim")}
        return cls(
            faiss.read_index(f"{folder}/{FAISS_INDEX}"),
            pq.read_table(f"{folder}/{INDEX_IDS}")["video_id"].to_pylist(),
            IndexConfig(**info["config"]),
            meta,
        )


def check_index_matches(folder: str, model_dir: str, allow_unverified: bool = False) -> str:
    """Refuse an index that the encoder at ``model_dir`` cannot search: no vectors, another dimension, built by
    another document tower (its fingerprint is in index.json), or one that names no document tower at all (an
    index of another model with the same dimension would be served silently wrong) unless ``allow_unverified``.
    Returns how it was checked, for /healthz. A sparse encoder's index is an inverted index of its codes
    (:mod:`crops_ray.sparse.index`), a dense encoder's a FAISS one: the other kind is refused."""
    from crops_ray.encoder import Encoder, EncoderConfig, doc_head_fingerprint, doc_tower_fingerprint, saved_config
    from crops_ray.plumbing import model_path
    from crops_ray.sparse.index import KIND as SPARSE

    with open(f"{folder}/{INDEX_JSON}") as f:
        info = json.load(f)
    if not info.get("size"):
        raise ValueError(f"index {folder} has no vectors")
    index_kind = "sparse" if info.get("kind") == SPARSE else "dense"
    model_kind = "sparse" if (saved_config(model_path(model_dir)) or EncoderConfig()).sparse else "dense"
    if index_kind != model_kind:  # a sparse model and its base share a document tower: the fingerprint cannot tell
        raise ValueError(
            f"index {folder} is a {index_kind} index, but the encoder {model_dir} is {model_kind}: serve a model "
            "with the index its own evaluation wrote (pipelines/evaluate.py --out OUT writes OUT/index/)"
        )
    dim = Encoder.output_dim(model_dir)
    if info.get("dim") != dim:
        raise ValueError(
            f"index {folder} holds {info.get('dim')}-dimensional vectors, "
            f"but the encoder {model_dir} makes {dim}-dimensional ones"
        )
    if "encoder" not in info:
        if not allow_unverified:
            raise ValueError(
                f"index {folder} does not name the document encoder that built it (index.json has no 'encoder'), so "
                f"nothing shows that {model_dir} can search it: rebuild it with pipelines/evaluate.py, or set "
                "allow_unverified_index=true to serve it on its dimension alone"
            )
        return "dimension only (index.json names no encoder; served with allow_unverified_index)"
    mine = doc_tower_fingerprint(model_path(model_dir), [])
    if info["encoder"] != mine:
        raise ValueError(
            f"index {folder} was built by another document encoder ({info.get('model', '?')}, fingerprint "
            f"{info['encoder']}), not by {model_dir} ({mine}): rebuild the index with this model"
        )
    head = doc_head_fingerprint(model_path(model_dir))
    if model_kind == "sparse" and info.get("doc_head") != head:  # same tower, other codes: another fit or training
        raise ValueError(
            f"sparse index {folder} holds the codes of another document head ({info.get('doc_head')}), not "
            f"{model_dir}'s ({head}): rebuild the index with this model"
        )
    return f"encoder fingerprint {mine}" + (f", document head {head}" if head else "") + f" and dimension {dim}"
