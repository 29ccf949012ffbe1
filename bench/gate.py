"""Benchmark: what scoring a mined candidate costs with the cross-encoder gate against the bi-encoder gate it replaced.

The pairs are a build's own mined candidates (``OUT/_work/pairs`` of a ``build_data --keep-work`` run, the rows with
``needs_score``), a random sample of ``--pairs`` of them, scored in this one process by:

- ``bi-encoder``: the previous default, cosine of MiniLM embeddings with its per-text embedding cache (a video in
  many pairs is encoded once): the engine's scorer as it was;
- ``cross-encoder``: the new default, one forward pass per (query, text) pair, batched by length;
- ``cross-encoder int8``: the same with dynamically quantised int8 linear layers (PyTorch), one pair per pass
  (``DiscriminatorConfig.int8``: in a batch, int8 activations would make a pair's score depend on its neighbours).

Each runs ``--rounds`` times on a fresh model (the bi-encoder's cache starts empty each round), alternating; the best
round counts. Printed: pairs/s, ms per pair, the ratio to the bi-encoder, and the time a log with 190k candidate
pairs would take at that rate. Threads: ``--threads`` (2 on the 2-core machine, as the engine's two actors use).

    .venv/bin/python bench/gate.py --pairs-dir runs/data/_work/pairs --gate GATE_FOLDER [--pairs 4000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import pandas as pd
import pyarrow.parquet as pq


def sample_pairs(folder: str, n: int, seed: int) -> pd.DataFrame:
    from crops_ray.storage import parquet_files

    t = pq.read_table(parquet_files(folder), columns=["query", "text", "needs_score"]).to_pandas()
    t = t[t["needs_score"].fillna(False)]
    return t.sample(min(n, len(t)), random_state=seed).reset_index(drop=True)


def scorers(gate: str):
    from crops_ray.discriminator import Calibration, Discriminator, DiscriminatorConfig

    def bi():
        return Discriminator(DiscriminatorConfig(kind="bi-encoder"), device="cpu").raw_scores

    def cross():
        cal = Calibration(1.0, 0.0, gate, "cross-encoder", "bench", 0, 0)
        return Discriminator(DiscriminatorConfig(), cal, device="cpu").raw_scores

    def cross_int8():
        cal = Calibration(1.0, 0.0, gate, "cross-encoder", "bench", 0, 0, int8=True)
        return Discriminator(DiscriminatorConfig(), cal, device="cpu").raw_scores

    return {"bi-encoder": bi, "cross-encoder": cross, "cross-encoder int8": cross_int8}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs-dir", required=True, help="a build_data --keep-work output's _work/pairs")
    p.add_argument("--gate", required=True, help="the trained cross-encoder folder (calibration's model)")
    p.add_argument("--pairs", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    pairs = sample_pairs(args.pairs_dir, args.pairs, args.seed)
    queries, texts = pairs["query"].tolist(), pairs["text"].tolist()
    best: dict[str, float] = {}
    raw: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, make in scorers(args.gate).items():
            score = make()
            started = time.perf_counter()
            raw[name] = score(queries, texts)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    base = best["bi-encoder"]
    rows = [
        {
            "gate": name,
            "pairs": len(queries),
            "pairs/s": round(len(queries) / s, 1),
            "ms/pair": round(1000 * s / len(queries), 2),
            "ratio to bi-encoder": round(s / base, 2),
            "190k pairs, min": round(190_000 * s / len(queries) / 60, 1),
        }
        for name, s in best.items()
    ]
    print(pd.DataFrame(rows).to_markdown(index=False))
    agree = np.corrcoef(raw["cross-encoder"], raw["cross-encoder int8"])[0, 1]
    print(f"\nint8 against fp32 cross-encoder logits: Pearson r = {agree:.4f}")
    return rows


if __name__ == "__main__":
    main()
