"""Benchmark: the discriminator through Ray Data's actor pool against the same model in a plain loop, and
build_data end to end on the small world.

1. Discriminator pairs/s: the same (query, video text) pairs, each video distinct (so every pair costs a
   forward pass), scored (a) in this process in a plain loop, ``--threads`` torch threads, and (b) by
   ``score_dataset`` (an actor pool of up to ``--actors`` actors, one thread each: the same CPUs). Both times
   include loading the model; Ray's own start-up (``ray.init``) is reported apart. Rounds alternate plain /
   Ray (the machine may be shared) and the best round of each counts. Ray's overhead = Ray time / plain - 1.
2. build_data on the small world (generated and validated first, not timed): rows read per second, and the
   wall time of every stage.

    .venv/bin/python bench/engine.py [--pairs 1500] [--rounds 2] [--skip-e2e]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import pyarrow.parquet as pq

from crops_ray.discriminator import Calibration, Discriminator, DiscriminatorConfig, score_dataset


def bench_pairs(world: str, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` pairs over ``n`` distinct videos, each with a query it is graded relevant for (or a random one)."""
    rng = np.random.default_rng(seed)
    videos = pq.read_table(f"{world}/videos").to_pandas().set_index("video_id")["text"]
    qrels = (
        pq.read_table(f"{world}/eval/qrels.parquet")
        .to_pandas()
        .drop_duplicates("video_id")
        .set_index("video_id")["query"]
    )
    ids = rng.choice(videos.index.to_numpy(), size=min(n, len(videos)), replace=False)
    queries = [qrels.get(v, qrels.iloc[int(rng.integers(len(qrels)))]) for v in ids]
    return queries, [videos[v] for v in ids]


def plain_loop(cfg: DiscriminatorConfig, cal, queries, texts, threads: int) -> tuple[float, np.ndarray]:
    import torch

    torch.set_num_threads(threads)
    started = time.perf_counter()
    disc = Discriminator(cfg, cal)
    out = [
        disc.theta(queries[i : i + cfg.batch_size], texts[i : i + cfg.batch_size])
        for i in range(0, len(queries), cfg.batch_size)
    ]
    return time.perf_counter() - started, np.concatenate(out)


def ray_pool(cfg: DiscriminatorConfig, cal, queries, texts) -> tuple[float, np.ndarray]:
    import ray.data

    rows = [{"i": i, "query": q, "text": t} for i, (q, t) in enumerate(zip(queries, texts))]
    started = time.perf_counter()
    ds = ray.data.from_items(rows, override_num_blocks=max(2, len(rows) // cfg.batch_size))
    out = score_dataset(ds, cfg, cal).to_pandas()
    seconds = time.perf_counter() - started
    return seconds, out.sort_values("i")["score"].to_numpy()


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=1500)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the plain loop (= CPUs the pool gets)")
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128, help="pairs per batch, both paths")
    p.add_argument("--skip-e2e", action="store_true", help="only the discriminator comparison")
    p.add_argument("--work", help="folder for the small world and outputs (default: a temporary folder)")
    args = p.parse_args(argv)
    os.environ.setdefault("CROPS_PROGRESS", "0")

    from crops_ray.runtime import init_ray
    from crops_ray.world.generator import generate_world, world_config

    work = args.work or tempfile.mkdtemp(prefix="crops-bench-")
    world = f"{work}/world"
    if not os.path.exists(f"{world}/world.json"):
        print(f"generating the small world -> {world}", flush=True)
        generate_world(world, world_config("small"), progress=lambda *_: None)
    # 0.5 CPU per actor in Ray's accounting (2 actors at 1 CPU each can starve the other tasks on 2 cores), one
    # torch thread each: the pool uses the same cores as the plain loop.
    cfg = DiscriminatorConfig(
        batch_size=args.batch_size,
        pool_min=1,
        pool_max=args.actors,
        num_cpus=0.5,
        torch_threads=max(1, args.threads // args.actors),
    )
    # Speed only: theta = sigmoid(raw), no fit (the gate's calibration is learnt from the logs by build_data and
    # changes no forward pass).
    cal = Calibration(
        a=1.0, b=0.0, model=cfg.model, kind=cfg.kind, source="bench: identity", labelled_pairs=0, positives=0
    )
    queries, texts = bench_pairs(world, args.pairs)
    started = time.perf_counter()
    init_ray()
    ray_init_s = time.perf_counter() - started
    plain, pooled, diff = [], [], 0.0
    for r in range(args.rounds):
        t_plain, s_plain = plain_loop(cfg, cal, queries, texts, args.threads)
        t_ray, s_ray = ray_pool(cfg, cal, queries, texts)
        diff = max(diff, float(np.abs(s_plain - s_ray).max()))
        plain.append(t_plain)
        pooled.append(t_ray)
        print(f"round {r + 1}: plain {t_plain:.1f}s, Ray Data pool {t_ray:.1f}s", flush=True)
    n = len(queries)
    best_plain, best_ray = min(plain), min(pooled)
    lines = [
        (
            f"load average at the end: {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} CPUs (shared machine: compare rows of one run only)"
        ),
        "",
        "| measure | seconds | rate | note |",
        "|---|---:|---:|---|",
        (
            f"| discriminator, plain loop in one process ({args.threads} threads) | {best_plain:.1f} | "
            f"{n / best_plain:.0f} pairs/s | best of {args.rounds}; model load included |"
        ),
        (
            f"| discriminator, Ray Data actor pool ({args.actors} actors x {cfg.torch_threads} thread) | "
            f"{best_ray:.1f} | {n / best_ray:.0f} pairs/s | best of {args.rounds}; actor start and model load included "
            "|"
        ),
        (
            f"| Ray overhead | - | {100 * (best_ray / best_plain - 1):+.1f}% "
            f"| target < 10%; max theta difference {diff:.1e} |"
        ),
        f"| ray.init | {ray_init_s:.1f} | - | once per job, not in the rows above |",
    ]
    if not args.skip_e2e:
        from crops_ray.engine.build import EngineConfig, build_data
        from crops_ray.validate import validate_logs

        validated = f"{work}/validated"
        if not os.path.exists(f"{validated}/validation.json"):
            print("validating the small world", flush=True)
            validate_logs(world, validated, progress=lambda *_: None)
        print("build_data on the small world", flush=True)
        stats = build_data(
            validated, f"{work}/data", EngineConfig(), eval_dir=f"{world}/eval", progress=lambda m: print(m, flush=True)
        )
        rows = sum(stats["rows_read"].values())
        total = stats["seconds"]["total"]
        lines.append(
            f"| build_data, small world (P1+P2+P3, {stats['sources']['llm']['queries']} LLM queries) | {total:.1f} | "
            f"{rows / total:,.0f} rows/s | {rows:,} rows read; {stats['samples']['rows']:,} samples |"
        )
        for stage, seconds in stats["seconds"].items():
            if stage != "total":
                lines.append(f"| - {stage} | {seconds:.1f} | - | |")
    table = "\n".join(lines)
    print("\n" + table)
    return table


if __name__ == "__main__":
    main()
