"""Evaluation: retrieve top-k for every evaluation query and score the run as the paper does.

Targets come from ``LOGS/eval/`` (any of ``ct.parquet``, ``qr.parquet``, ``qrels.parquet``); the corpus from
``LOGS/videos``. A dense method encodes the corpus with the document tower (Ray Data, cached), builds a FAISS
index, and encodes the queries with the query tower; a sparse one (a CSR model, :mod:`crops_ray.sparse`) reads
the same cached corpus encoding through its document head into an inverted index, searched exactly; ``bm25``
needs no model. Writes ``metrics.json``, ``per_query.parquet`` and, for model methods, ``index/`` (what Serve
loads; a sparse index records its audit there: latents unused, the longest posting list, multiply-adds per query).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from crops_ray import metrics as M
from crops_ray import schema as S
from crops_ray import storage
from crops_ray.config import config
from crops_ray.embed import EmbedConfig, encode_corpus
from crops_ray.index import IndexConfig, VectorIndex
from crops_ray.onnx_encoder import EncoderBackend, check_backend

TARGETS = ("ct", "qr", "qrels")
METHODS = ("bm25", "dense", "sparse")


@config
class EvalConfig:
    recall_ks: tuple = (10, 20, 50, 100, 1000)
    ndcg_ks: tuple = (4, 10)
    mrr_k: int = 10
    query_batch_size: int = 64
    # The queries' encoder runtime (crops_ray/onnx_encoder.py); the corpus is always encoded by PyTorch.
    query_backend: EncoderBackend = "torch"
    query_threads: int | None = None  # ONNX Runtime's intra-op threads for the queries (None: all cores)
    index: IndexConfig = field(default_factory=IndexConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)

    def __post_init__(self) -> None:
        check_backend(self.query_backend)


@dataclass
class Targets:
    ct: list[tuple[str, str]] | None = None
    qr: list[tuple[str, str]] | None = None
    qrels: dict[str, dict[str, int]] | None = None

    def queries(self) -> list[str]:
        qs = set()
        for pairs in (self.ct, self.qr):
            qs.update(q for q, _ in pairs or ())
        qs.update(self.qrels or ())
        return sorted(qs)


def load_targets(logs: str) -> Targets:
    present = set(storage.parquet_files(f"{logs.rstrip('/')}/eval"))
    found = {name: f"{logs.rstrip('/')}/eval/{name}.parquet" for name in TARGETS}
    found = {k: v for k, v in found.items() if v in present}
    if not found:
        raise FileNotFoundError(
            f"{logs}/eval/ holds none of {[t + '.parquet' for t in TARGETS]}: nothing to evaluate against"
        )
    t = Targets()
    for name, path in found.items():
        table = storage.read_table(path)
        missing = [c for c in S.EVAL_SCHEMAS[name].names if c not in table.column_names]
        if missing:
            raise S.LogSchemaError(f"{path}: missing column(s) {missing}")
        if name == "qrels":
            t.qrels = M.qrels_from_rows(
                zip(table["query"].to_pylist(), table["video_id"].to_pylist(), table["grade"].to_pylist())
            )
        else:
            setattr(t, name, list(zip(table["query"].to_pylist(), table["video_id"].to_pylist())))
    return t


def _corpus(logs: str) -> tuple[list[str], pa.Table]:
    files = S.table_files(logs, "videos")
    return files, storage.read_table(files, columns=["video_id", "text"])


def retrieve(
    method: str,
    logs: str,
    queries: list[str],
    k: int,
    model: str | None = None,
    cfg: EvalConfig | None = None,
    out: str | None = None,
    progress=print,
) -> dict[str, list[str]]:
    """The run: query -> top-k video ids, best first."""
    cfg = cfg or EvalConfig()
    files, corpus = _corpus(logs)
    if method == "bm25":
        from crops_ray.bm25 import BM25Retriever

        retriever = BM25Retriever(corpus["video_id"].to_pylist(), corpus["text"].to_pylist())
        ranked, _ = retriever.search(queries, k)
        return dict(zip(queries, ranked))
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: one of {METHODS} ('dense' and 'sparse' need a model folder)")
    from crops_ray.encoder import saved_config
    from crops_ray.onnx_encoder import load_encoder
    from crops_ray.plumbing import model_path

    model_dir = model_path(model or "minilm")
    is_sparse = bool(getattr(saved_config(model_dir), "sparse", False))
    if is_sparse != (method == "sparse"):
        kind = "a sparse (CSR)" if is_sparse else "a dense"
        raise ValueError(f"{model_dir} is {kind} encoder: evaluate it with method={'sparse' if is_sparse else 'dense'}")
    ids, emb = encode_corpus(files, model_dir, cfg.embed, progress=progress)
    if is_sparse:
        return _sparse_run(model_dir, ids, emb, queries, k, cfg, out, progress)
    index = VectorIndex.build(ids, emb, cfg.index)
    encoder = load_encoder(model_dir, cfg.query_backend, threads=cfg.query_threads)
    q = encoder.encode_queries(queries, batch_size=cfg.query_batch_size)
    ranked, _ = index.search(q, k)
    if cfg.index.kind != "flat":
        progress(f"{cfg.index.kind} index recall@{k} against exact search: {index.recall_against_exact(emb, q, k):.4f}")
    if out:
        from crops_ray.encoder import doc_tower_fingerprint

        index.meta = {
            "encoder": doc_tower_fingerprint(model_dir, []),
            "model": os.path.abspath(model_dir) if os.path.isdir(model_dir) else model_dir,
        }
        index.save(f"{out}/index")
    return dict(zip(queries, ranked))


def _sparse_run(model_dir, ids, pooled, queries, k, cfg: EvalConfig, out, progress) -> dict[str, list[str]]:
    """A sparse encoder's run: the cached pooled corpus through its document head into an inverted index, the
    queries' codes searched exactly; the index's audit is printed and saved with it."""
    from crops_ray.encoder import Encoder, doc_head_fingerprint, doc_tower_fingerprint
    from crops_ray.sparse.index import SparseIndex

    if cfg.query_backend != "torch":
        raise ValueError(
            f"a sparse encoder's queries run on PyTorch: query_backend {cfg.query_backend!r} is dense only"
        )
    encoder = Encoder.from_pretrained(model_dir)
    encoder.eval()
    index = SparseIndex.build(ids, encoder.sparse.codes("doc", pooled))
    q = encoder.encode_queries(queries, batch_size=cfg.query_batch_size)
    ranked, _ = index.search(q, k)
    audit = {**index.audit(q), "dense_multiply_adds_per_query": len(ids) * encoder.pooled_dim}
    progress(
        f"sparse index: {audit['unused_latents']:.1%} of {audit['latents']} latents unused, longest posting list "
        f"{audit['longest_posting_share']:.1%} of the corpus, {audit['multiply_adds_per_query']:,.0f} multiply-adds "
        f"per query (a flat dense search: {audit['dense_multiply_adds_per_query']:,})"
    )
    if out:
        index.meta = {
            "encoder": doc_tower_fingerprint(model_dir, []),
            "doc_head": doc_head_fingerprint(model_dir),
            "model": os.path.abspath(model_dir),
            "audit": audit,
        }
        index.save(f"{out}/index")
    return dict(zip(queries, ranked))


def score_run(run: dict[str, list[str]], targets: Targets, cfg: EvalConfig) -> tuple[dict[str, float], pa.Table]:
    """Aggregate metrics (fractions in [0, 1]) and a per-query table."""
    m: dict[str, float] = {}
    per_query = {q: {"query": q} for q in run}
    for name, pairs in (("ct", targets.ct), ("qr", targets.qr)):
        if pairs is None:
            continue
        for k in cfg.recall_ks:
            m[f"recall@{k}_{name}"] = M.recall_at_k(run, pairs, k)
        # Per query: target pairs and hits at each cut-off, so a subset of queries (a bucket, a bootstrap
        # resample) scores the same pair-level ratio as the whole run.
        for k in cfg.recall_ks:
            for q, (hits, total) in M.per_query_hits(run, pairs, k).items():
                per_query[q][f"hits@{k}_{name}"] = hits
                per_query[q][f"pairs_{name}"] = total
        for q, r in M.per_query_recall(run, pairs, 100).items():
            per_query[q][f"recall@100_{name}"] = r
        m[f"pairs_{name}"] = len(pairs)
    if targets.qrels is not None:
        for k in cfg.ndcg_ks:
            m[f"ndcg@{k}"] = M.ndcg_at_k(run, targets.qrels, k)
            for q, v in M.ndcg_per_query(run, targets.qrels, k).items():
                per_query[q][f"ndcg@{k}"] = v
        m[f"mrr@{cfg.mrr_k}"] = M.mrr_at_k(run, targets.qrels, cfg.mrr_k)
    for q in per_query:
        per_query[q]["top10"] = list(run[q][:10])
    import pandas as pd

    # Through pandas: queries differ in which columns they have (a query without QR pairs), and
    # Table.from_pylist would take its columns from the first row only.
    return m, pa.Table.from_pandas(pd.DataFrame(list(per_query.values())), preserve_index=False)


def evaluate(
    logs: str, out: str, method: str = "dense", model: str | None = None, cfg: EvalConfig | None = None, progress=print
) -> dict[str, float]:
    cfg = cfg or EvalConfig()
    started = time.time()
    targets = load_targets(logs)
    queries = targets.queries()
    progress(f"evaluating {method}{' ' + model if model else ''} on {len(queries):,} queries")
    os.makedirs(out, exist_ok=True)
    run = retrieve(method, logs, queries, max(cfg.recall_ks), model=model, cfg=cfg, out=out, progress=progress)
    metrics, per_query = score_run(run, targets, cfg)
    metrics["queries"] = len(queries)
    metrics["seconds"] = round(time.time() - started, 2)
    pq.write_table(per_query, f"{out}/per_query.parquet")
    with open(f"{out}/metrics.json", "w") as f:
        json.dump(
            {"method": method, "model": model, "logs": logs, "metrics": metrics, "config": asdict(cfg)},
            f,
            indent=2,
            default=str,
        )
    return metrics


def format_metrics(metrics: dict[str, float]) -> str:
    from crops_ray.report.markdown import key_value_table

    return key_value_table(
        ((k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in metrics.items()), headers=("metric", "value")
    )
