"""Benchmark: the query encoder on PyTorch against ONNX Runtime (fp32, and int8 weights), for speed and quality.

1. Speed: the evaluation queries of the demo world encoded by the trained CroPS model's query tower, one thread
   each, in this one process, at batch 1 (``--single`` queries, one per call) and batch 32 (every query). Rounds
   alternate the backends (the machine may be shared); each backend's best round counts, printed as queries/s and
   as its ratio to torch. The one-off ONNX export (cached afterwards) is timed apart.
2. Quality: every evaluation query encoded by each backend and searched against the same corpus embeddings (the
   index evaluation wrote, exact inner product), scored by ``crops_ray.evaluate.score_run``: Recall@100 CT / QR
   and NDCG@4, the change against torch with its paired bootstrap 95% CI (``crops_ray.significance``), and the
   largest |cosine(query, video) difference| to torch over the whole corpus. For the CroPS model and zero-shot
   MiniLM.

    .venv/bin/python bench/onnx.py [--run runs/demo/seed-0] [--rounds 3] [--single 200]

``--run`` is a demo seed folder: world/, crops/model, crops/eval/index and zero_shot/index.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from crops_ray.evaluate import EvalConfig, load_targets, score_run
from crops_ray.index import VectorIndex, check_index_matches
from crops_ray.onnx_encoder import BACKENDS, OnnxEncoder, load_encoder
from crops_ray.significance import compare_runs

# This file's folder leaves the path: as sys.path[0] it would make this script the `onnx` that onnxruntime imports
# (lazily, in crops_ray.onnx_encoder: so after the imports above is soon enough).
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

SCORES = ("recall@100_ct", "recall@100_qr", "ndcg@4")


def load(model: str, backend: str, threads: int = 1):
    enc = load_encoder(model, backend, threads=threads)
    if backend != "torch":
        enc.session("query")  # the export (cached) and the session, before any timing
    return enc


def speed(model: str, queries: list[str], rounds: int, single: int) -> dict[str, dict[int, float]]:
    """queries/s per backend at batch 1 and 32: the best of ``rounds`` alternating rounds, one thread."""
    import torch

    torch.set_num_threads(1)
    encoders = {b: load(model, b) for b in BACKENDS}
    work = {1: queries[:single], 32: queries}
    for enc in encoders.values():  # warm-up: first calls allocate
        enc.encode_queries(queries[:64], batch_size=32)
    best: dict[str, dict[int, float]] = {b: {1: 0.0, 32: 0.0} for b in BACKENDS}
    for r in range(rounds):
        order = BACKENDS if r % 2 == 0 else BACKENDS[::-1]
        for backend in order:
            for batch, texts in work.items():
                started = time.perf_counter()
                if batch == 1:
                    for t in texts:
                        encoders[backend].encode_queries([t], batch_size=1)
                else:
                    encoders[backend].encode_queries(texts, batch_size=batch)
                best[backend][batch] = max(best[backend][batch], len(texts) / (time.perf_counter() - started))
    return best


def quality(model: str, index_dir: str, targets, queries: list[str]) -> dict[str, dict]:
    """Per backend: the metrics, their change against torch (paired CI), and the largest |cosine difference|."""
    check_index_matches(index_dir, model)
    index = VectorIndex.load(index_dir)
    corpus = index.index.reconstruct_n(0, index.index.ntotal)
    cfg = EvalConfig(recall_ks=(100,), ndcg_ks=(4,))
    out: dict[str, dict] = {}
    for backend in BACKENDS:
        q = load(model, backend, threads=1).encode_queries(queries, batch_size=64)
        ranked, _ = index.search(q, 100)
        metrics, per_query = score_run(dict(zip(queries, ranked)), targets, cfg)
        out[backend] = {"q": q, "metrics": metrics, "per_query": per_query.to_pandas()}
    base = out["torch"]
    scores_torch = base["q"] @ corpus.T
    for backend in BACKENDS[1:]:
        o = out[backend]
        o["ci"] = compare_runs(o["per_query"], base["per_query"])
        o["max_cos_diff"] = float(np.abs(o["q"] @ corpus.T - scores_torch).max())
        o["min_query_cos"] = float((o["q"] * base["q"]).sum(1).min())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/demo/seed-0", help="a demo seed folder (world/, crops/, zero_shot/)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--single", type=int, default=200, help="queries encoded one per call for batch 1")
    a = p.parse_args()
    started = time.time()
    load_before = os.getloadavg()
    targets = load_targets(f"{a.run}/world")
    queries = targets.queries()
    crops = f"{a.run}/crops/model"
    t0 = time.perf_counter()
    for quantize in (False, True):
        OnnxEncoder.from_pretrained(crops, quantize=quantize).session("query")  # as serve's build_app does
    print(f"ONNX query tower, fp32 + int8 (exported, or found in the cache): {time.perf_counter() - t0:.1f} s")

    rates = speed(crops, queries, a.rounds, a.single)
    print(f"\n## Query encoding speed, 1 thread ({len(queries)} queries; batch 1: {a.single})\n")
    print("| backend | batch 1 q/s | ratio | batch 32 q/s | ratio |\n|---|---:|---:|---:|---:|")
    for b in BACKENDS:
        r1, r32 = rates[b][1], rates[b][32]
        print(f"| {b} | {r1:.0f} | {r1 / rates['torch'][1]:.2f}x | {r32:.0f} | {r32 / rates['torch'][32]:.2f}x |")

    print(f"\n## Quality: queries by each backend, the same corpus embeddings ({len(queries)} queries)\n")
    print(
        "| model | backend | R@100 CT | R@100 QR | NDCG@4 | ΔR@100 CT [95% CI] | ΔR@100 QR [95% CI] | ΔNDCG@4 [95% CI] "
        "| max abs Δcos | min cos(q) |\n|---|---|---:|---:|---:|---|---|---|---:|---:|"
    )
    for name, model, index in (("crops", crops, f"{a.run}/crops/eval/index"), ("zero-shot", "minilm", None)):
        res = quality(model, index or f"{a.run}/zero_shot/index", targets, queries)
        for b in BACKENDS:
            row = [name, b] + [f"{res[b]['metrics'][k]:.4f}" for k in SCORES]
            if b == "torch":
                row += ["", "", "", "", ""]
            else:
                ci = res[b]["ci"]
                row += [f"{ci[k]['diff']:+.4f} [{ci[k]['ci_low']:+.4f}, {ci[k]['ci_high']:+.4f}]" for k in SCORES]
                row += [f"{res[b]['max_cos_diff']:.2e}", f"{res[b]['min_query_cos']:.4f}"]
            print("| " + " | ".join(row) + " |")
    load_after = os.getloadavg()
    print(
        f"\nload average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
        f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} on {os.cpu_count()} cores; "
        f"{time.time() - started:.0f} s in all"
    )


if __name__ == "__main__":
    main()
