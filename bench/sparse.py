"""Benchmark: exact search in the sparse retriever's inverted index against FAISS flat (exact inner product).

Two corpora, both indexes built and searched in this one process:

1. ``demo``: the world's videos (``--world``, default ``runs/all/seed-0/world``; generated with
   ``world_config("small", seed=0)`` under ``--out`` if absent; ``none`` skips it). Dense: FAISS flat over the
   corpus's pooled MiniLM embeddings (the corpus cache of :func:`crops_ray.embed.encode_corpus`). Sparse: CSR heads
   fitted on those embeddings (:func:`crops_ray.sparse.fit.sparse_init`, default :class:`SparseConfig`: 32 of 1,536
   latents; the experiment's sparse start, kept under ``--out`` for the next run), or the heads of a trained sparse
   encoder (``--model``), in a :class:`SparseIndex`. Queries: the world's evaluation queries, pooled by the same
   query tower, as they are (dense) or through the query head (sparse).
2. ``synthetic``: ``--docs`` documents (a million by default). Dense: random unit 384-d vectors. Sparse: ``k``
   non-zero latents of 1,536 per code, non-negative, unit length, the latents drawn without replacement with the
   popularity that corpus 1's codes show (documents' and queries' each; real CSR codes use a few latents far more
   than the rest), or a Zipf law of exponent ``--zipf`` (the default without corpus 1). The Zipf exponent that fits
   each corpus's latent usage is printed. Queries likewise, ``--queries`` of them.

Per corpus and index: index bytes (FAISS flat: ``ntotal * d * 4``; sparse: the postings' data, indices and indptr),
the median time of a one-query search (``--single`` queries, each timed alone, the best of ``--rounds`` alternating
rounds), the throughput of ``--batch`` queries per call (the best round), and the multiply-adds per query
(:meth:`SparseIndex.audit`'s, against ``n * d``), each as a ratio to FAISS flat. Both return ids, as serving does.
The sparse top-``k`` is checked against scoring every document on ``--check`` queries of each corpus.

FAISS runs on ``--threads`` OpenMP threads; scipy's sparse product on one. The load average is recorded at the start
and the end: numbers from a shared machine are to be rerun on a quiet one.

    .venv/bin/python bench/sparse.py [--world PATH|none] [--model SPARSE_FOLDER] [--docs 1000000] [--quick]

Writes ``OUT/results.json`` (``--out``, default ``runs/bench-sparse``) and prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The repository root replaces bench/ on the path: as sys.path[0], bench/serve.py would shadow the serve package.
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from crops_ray.index import IndexConfig, VectorIndex  # noqa: E402
from crops_ray.sparse.index import SparseIndex  # noqa: E402

DEFAULT_WORLD = "runs/all/seed-0/world"
DENSE_DIM, LATENTS, NONZEROS = 384, 1536, 32  # MiniLM's width; SparseConfig's dim and k
# The synthetic corpus's Zipf exponent when no demo corpus gives the measured popularity: about what fitted heads'
# codes of the demo world show (the exponent each run measures is in its results).
DEFAULT_ZIPF = 1.0
GENERATION_CHUNK = 32_768  # rows generated at once: a Gumbel key per latent is 200 MB at this size


@dataclass
class Corpus:
    name: str
    doc_vectors: np.ndarray  # float32 [n, d], unit rows
    query_vectors: np.ndarray
    doc_codes: sp.csr_matrix  # [n, latents]
    query_codes: sp.csr_matrix
    notes: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- corpus 1


def demo_corpus(world: str, model: str | None, seed: int, fit_steps: int | None, out: str) -> Corpus:
    """The world's videos and evaluation queries: pooled embeddings and their CSR codes."""
    from crops_ray import schema as S
    from crops_ray.embed import encode_corpus
    from crops_ray.encoder import Encoder
    from crops_ray.evaluate import load_targets
    from crops_ray.plumbing import model_path

    files = S.table_files(world, "videos")
    folder = model_path(model or "minilm")
    _, pooled_docs = encode_corpus(files, folder)
    if model is None:
        folder = fitted_heads(files, pooled_docs, seed, fit_steps, out)
    encoder = Encoder.from_pretrained(folder)
    if encoder.sparse is None:
        raise ValueError(f"{folder} is a dense encoder: --model takes a sparse one (sparse: true)")
    pooled_queries = encoder.encode_queries(load_targets(world).queries(), pooled=True)
    return Corpus(
        "demo",
        pooled_docs,
        pooled_queries,
        encoder.sparse.codes("doc", pooled_docs),
        encoder.sparse.codes("query", pooled_queries),
        {"world": world, "model": folder},
    )


def fitted_heads(files: list[str], pooled: np.ndarray, seed: int, fit_steps: int | None, out: str) -> str:
    """MiniLM with CSR heads fitted on the corpus (:func:`crops_ray.sparse.fit.sparse_init`, as the experiment's
    sparse methods start), kept under ``out`` for the next run: one folder per corpus, fit steps and seed."""
    from crops_ray.encoder import doc_tower_fingerprint
    from crops_ray.plumbing import model_path
    from crops_ray.sparse.fit import sparse_init
    from crops_ray.sparse.head import SparseConfig

    cfg = SparseConfig() if fit_steps is None else SparseConfig(fit_steps=fit_steps)
    minilm = model_path("minilm")
    folder = f"{out}/sparse_init-{doc_tower_fingerprint(minilm, files)}-{cfg.fit_steps}steps-seed{seed}"
    return sparse_init(minilm, pooled, folder, cfg, shared=True, seed=seed, progress=lambda m: print(f"demo: {m}"))


# ------------------------------------------------------------------------------------------------- corpus 2


def latent_popularity(codes: sp.csr_matrix) -> np.ndarray:
    """Each latent's share of the codes' non-zeros (sums to 1)."""
    counts = np.bincount(codes.indices, minlength=codes.shape[1]).astype(np.float64)
    return counts / max(1.0, counts.sum())


def zipf_popularity(exponent: float, latents: int = LATENTS) -> np.ndarray:
    weights = np.arange(1, latents + 1, dtype=np.float64) ** -exponent
    return weights / weights.sum()


def zipf_exponent(usage: np.ndarray) -> float:
    """The exponent ``s`` of the least-squares line log(usage) = c - s log(rank) over the latents that are used
    (``usage``: codes per latent)."""
    counts = np.sort(usage)[::-1]
    counts = counts[counts > 0]
    if len(counts) < 2:
        return 0.0
    slope, _ = np.polyfit(np.log(np.arange(1, len(counts) + 1)), np.log(counts), 1)
    return float(-slope)


def random_codes(rows: int, popularity: np.ndarray, k: int, rng: np.random.Generator) -> sp.csr_matrix:
    """``rows`` codes of ``k`` distinct latents each, drawn without replacement with weights ``popularity`` (the
    Gumbel top-k trick), non-negative values, unit length; built a chunk at a time (never a dense [rows, latents])."""
    log_weights = np.log(np.where(popularity > 0, popularity, np.finfo(np.float64).tiny)).astype(np.float32)
    blocks = []
    for start in range(0, rows, GENERATION_CHUNK):
        m = min(GENERATION_CHUNK, rows - start)
        with np.errstate(divide="ignore"):  # a uniform draw of exactly 0 gives the key -inf: never picked
            keys = log_weights - np.log(-np.log(rng.random((m, len(popularity)), dtype=np.float32)))
        latents = np.argpartition(-keys, k - 1, axis=1)[:, :k].astype(np.int32)
        values = rng.exponential(size=(m, k)).astype(np.float32)
        values /= np.linalg.norm(values, axis=1, keepdims=True)
        indptr = np.arange(0, m * k + 1, k, dtype=np.int64)
        blocks.append(sp.csr_matrix((values.ravel(), latents.ravel(), indptr), shape=(m, len(popularity))))
    return sp.vstack(blocks, format="csr")


def random_unit_vectors(rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, GENERATION_CHUNK):
        block = rng.standard_normal((min(GENERATION_CHUNK, rows - start), dim), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def synthetic_corpus(docs: int, queries: int, seed: int, demo: Corpus | None, zipf: float | None) -> Corpus:
    rng = np.random.default_rng(seed)
    if zipf is None and demo is not None:
        doc_popularity, query_popularity = latent_popularity(demo.doc_codes), latent_popularity(demo.query_codes)
        law = "the demo codes' latent usage (documents' and queries' each)"
    else:
        zipf = DEFAULT_ZIPF if zipf is None else zipf
        doc_popularity = query_popularity = zipf_popularity(zipf)
        law = f"Zipf, exponent {zipf}"
    started = time.perf_counter()
    corpus = Corpus(
        "synthetic",
        random_unit_vectors(docs, DENSE_DIM, rng),
        random_unit_vectors(queries, DENSE_DIM, rng),
        random_codes(docs, doc_popularity, NONZEROS, rng),
        random_codes(queries, query_popularity, NONZEROS, rng),
        {"latent_popularity": law},
    )
    print(f"synthetic: {docs:,} documents and {queries:,} queries generated in {time.perf_counter() - started:.1f} s")
    return corpus


# ------------------------------------------------------------------------------------------------- measuring


def check_exact(index: SparseIndex, doc_codes: sp.csr_matrix, query_codes: sp.csr_matrix, k: int) -> float:
    """Raise unless the index's top-k scores are the top-k of scoring every document; return the share of queries
    whose ranked ids are identical too (float sums in another order may swap documents whose scores tie)."""
    ranked, scores = index.search(query_codes, k)
    brute = np.asarray(doc_codes @ query_codes.toarray().T).T  # [queries, n]: every document scored
    n, k = brute.shape[1], min(k, brute.shape[1])
    identical = 0
    for row, (ids, got) in enumerate(zip(ranked, scores)):
        s = brute[row]
        tied = np.flatnonzero(s >= np.partition(s, n - k)[n - k])  # the k best and every document tied with the k-th
        order = tied[np.lexsort((tied, -s[tied]))][:k]  # best first, ties by row: as the index breaks them
        rows = np.array([int(i) for i in ids])
        if not (np.allclose(got, s[order], atol=1e-5) and np.allclose(got, s[rows], atol=1e-5)):
            raise AssertionError(f"sparse top-{k} of query {row} is not the top-{k} of scoring every document")
        identical += bool(np.array_equal(rows, order))
    return identical / max(1, len(ranked))


def time_searches(searches: dict, queries: dict, k: int, single: int, batch: int, rounds: int) -> dict:
    """Per index: the median over ``single`` queries of one-query search seconds (each query's best round), and
    queries/s at ``batch`` queries per call (the best round). Rounds alternate the indexes' order."""
    names = list(searches)
    one = {name: np.full((rounds, single), np.inf) for name in names}
    rate = dict.fromkeys(names, 0.0)
    for name in names:  # warm-up: first calls allocate
        searches[name](queries[name][:1], k)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            search, q = searches[name], queries[name]
            for i in range(single):
                started = time.perf_counter()
                search(q[i : i + 1], k)
                one[name][r, i] = time.perf_counter() - started
            calls = max(1, q.shape[0] // batch)
            started = time.perf_counter()
            for c in range(calls):
                search(q[c * batch : (c + 1) * batch], k)
            rate[name] = max(rate[name], min(q.shape[0], calls * batch) / (time.perf_counter() - started))
    return {name: {"single_s": float(np.median(one[name].min(0))), "batch_qps": rate[name]} for name in names}


def measure(corpus: Corpus, args) -> list[dict]:
    """The table's two rows for ``corpus`` (FAISS flat, then sparse with its ratios to flat) and their details."""
    n, d = corpus.doc_vectors.shape
    ids = [str(i) for i in range(n)]
    dense = VectorIndex.build(ids, corpus.doc_vectors, IndexConfig(kind="flat"))  # as evaluation builds it
    corpus.doc_vectors = None  # the index holds its own copy: 1.5 GB for a million documents
    sparse = SparseIndex.build(ids, corpus.doc_codes)
    check = min(args.check, corpus.query_codes.shape[0])
    identical = check_exact(sparse, corpus.doc_codes, corpus.query_codes[:check], args.k)
    corpus.doc_codes = None
    audit = sparse.audit(corpus.query_codes)
    single = min(args.single, len(corpus.query_vectors))
    times = time_searches(
        {"flat": dense.search, "sparse": sparse.search},
        {"flat": corpus.query_vectors, "sparse": corpus.query_codes},
        args.k,
        single,
        args.batch,
        args.rounds,
    )
    p = sparse.postings
    size = {
        "flat": dense.index.ntotal * dense.index.d * 4,
        "sparse": p.data.nbytes + p.indices.nbytes + p.indptr.nbytes,
    }
    madds = {"flat": float(n * d), "sparse": audit["multiply_adds_per_query"]}
    rows = []
    for name, label in (("flat", "FAISS flat (exact IP)"), ("sparse", "sparse inverted (exact)")):
        t = times[name]
        rows.append(
            {
                "corpus": corpus.name,
                "index": label,
                "documents": n,
                "queries": len(corpus.query_vectors),
                "index MB": round(size[name] / 2**20, 1),
                "bytes / flat": round(size[name] / size["flat"], 3),
                "ms/query, batch 1": round(1000 * t["single_s"], 3),
                "time / flat, batch 1": round(t["single_s"] / times["flat"]["single_s"], 3),
                f"queries/s, batch {args.batch}": round(t["batch_qps"], 1),
                f"time / flat, batch {args.batch}": round(times["flat"]["batch_qps"] / t["batch_qps"], 3),
                "multiply-adds/query": round(madds[name]),
                "multiply-adds / flat": round(madds[name] / madds["flat"], 5),
            }
        )
    details = {
        "audit": audit,
        "zipf_exponent_docs": zipf_exponent(np.diff(sparse.postings.indptr)),
        "zipf_exponent_queries": zipf_exponent(np.bincount(corpus.query_codes.indices, minlength=sparse.dim)),
        "exact_check": {"queries": check, "identical_ranking_share": identical},
        "bytes": size,
        "times": times,
        **corpus.notes,
    }
    return [{**row, "details": details} for row in rows]


# ------------------------------------------------------------------------------------------------- driver


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default=None, help=f"a world folder, or none (default {DEFAULT_WORLD}, made if absent)")
    p.add_argument("--model", default=None, help="a trained sparse encoder folder (default: heads fitted here)")
    p.add_argument("--docs", type=int, default=1_000_000, help="synthetic documents")
    p.add_argument("--queries", type=int, default=512, help="synthetic queries")
    p.add_argument("--zipf", type=float, default=None, help="synthetic latents by Zipf(s), not the demo's usage")
    p.add_argument("--k", type=int, default=100, help="top-k per search")
    p.add_argument("--single", type=int, default=100, help="queries timed one per call")
    p.add_argument("--batch", type=int, default=256, help="queries per call for the throughput")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--check", type=int, default=50, help="queries checked against scoring every document")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="FAISS (OpenMP) and torch threads")
    p.add_argument("--fit-steps", type=int, default=None, help="CSR head fit steps (default SparseConfig's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench-sparse")
    p.add_argument("--quick", action="store_true", help="smoke run: 4,000 synthetic documents, few queries")
    args = p.parse_args(argv)
    if args.quick:
        args.docs, args.queries, args.single, args.batch, args.rounds = 4000, 64, 16, 32, 1
        args.check, args.fit_steps = 16, args.fit_steps or 20
    return args


def demo_world(world: str | None, out: str) -> str | None:
    if world == "none":
        return None
    if world is None and not os.path.exists(f"{DEFAULT_WORLD}/_SUCCESS"):
        from crops_ray.world.config import world_config
        from crops_ray.world.generator import generate_world

        world = f"{out}/world"
        if not os.path.exists(f"{world}/_SUCCESS"):
            print(f"no world at {DEFAULT_WORLD}: generating a small one (seed 0) in {world}")
            generate_world(world, world_config("small", seed=0))
    return world or DEFAULT_WORLD


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    import torch

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    started, load_start = time.time(), os.getloadavg()
    world = demo_world(args.world, args.out)
    demo = demo_corpus(world, args.model, args.seed, args.fit_steps, args.out) if world else None
    synthetic = synthetic_corpus(args.docs, args.queries, args.seed, demo, args.zipf)
    rows = []
    for corpus in (demo, synthetic):
        if corpus is not None:
            rows += measure(corpus, args)
    load_end = os.getloadavg()
    machine = {
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "faiss_threads": args.threads,
        "scipy_threads": 1,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "seconds": round(time.time() - started, 1),
    }
    print(pd.DataFrame([{k: v for k, v in r.items() if k != "details"} for r in rows]).to_markdown(index=False))
    for name in dict.fromkeys(r["corpus"] for r in rows):
        d = next(r["details"] for r in rows if r["corpus"] == name)
        a = d["audit"]
        print(
            f"\n{name}: latent usage fits Zipf exponent {d['zipf_exponent_docs']:.2f} (documents), "
            f"{d['zipf_exponent_queries']:.2f} (queries); {a['unused_latents']:.1%} of {a['latents']} latents unused, "
            f"longest posting list {a['longest_posting_share']:.1%} of the corpus; sparse top-{args.k} equals scoring "
            f"every document on {d['exact_check']['queries']} queries "
            f"({d['exact_check']['identical_ranking_share']:.0%} identical rankings)"
        )
    print(
        f"\n{machine['cores']} cores, FAISS on {args.threads} thread(s), scipy on 1; load average (1/5/15 min) "
        f"{'/'.join(f'{x:.2f}' for x in load_start)} at the start, "
        f"{'/'.join(f'{x:.2f}' for x in load_end)} at the end; "
        f"{machine['seconds']:.0f} s in all. A shared machine's numbers: rerun them on a quiet one."
    )
    os.makedirs(args.out, exist_ok=True)
    with open(f"{args.out}/results.json", "w") as f:
        json.dump({"args": vars(args), "machine": machine, "rows": rows}, f, indent=2, default=float)
    return rows


if __name__ == "__main__":
    main()
