"""Benchmark: forward+backward time of ``h_infonce`` against ``F.cross_entropy`` on in-batch scores.

Layout (DPR in-batch with K candidates per query): the score matrix is ``[B, B*K]``; row ``i``'s own
candidates are columns ``i*K .. i*K+K-1``.  ``h_infonce`` gets those K columns at levels drawn from 1..5
and level 0 elsewhere; ``cross_entropy`` gets ``target = i*K``.  Scores are cosine-like, in [-1, 1].
Both losses are timed interleaved (the machine may be shared): the median of several repeats after a
warm-up, bounded in wall time per shape; small shapes get more repeats.  Prints one markdown table.

    .venv/bin/python bench/loss.py [--repeats 20] [--threads 2] [--budget-s 12]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from crops_ray.losses import DEFAULT_TEMPERATURE, h_infonce

BATCH_SIZES = (64, 256, 1024)
CANDIDATES_PER_QUERY = (4, 16)
MAX_LEVEL = 5
DEFAULT_REPEATS = 20
DEFAULT_THREADS = 2
DEFAULT_BUDGET_S = 12.0  # per (device, B, K): stop repeating once this much wall time is spent
WARMUP = 2
SMALL_SHAPE_ELEMS = 2**20  # score matrices smaller than this get SMALL_SHAPE_REPEAT_FACTOR x repeats
SMALL_SHAPE_REPEAT_FACTOR = 10
MIN_REPEATS = 3
SEED = 0


def make_inputs(batch: int, k: int, device: torch.device, generator: torch.Generator):
    """Return (scores [B, B*K] requiring grad, level labels [B, B*K], cross-entropy target [B])."""
    n = batch * k
    # Cosine-like similarities in [-1, 1], as produced by a normalised bi-encoder.
    scores = (torch.rand(batch, n, generator=generator) * 2 - 1).to(device).requires_grad_(True)
    labels = torch.zeros(batch, n, dtype=torch.long)
    rows = torch.arange(batch).repeat_interleave(k)
    cols = torch.arange(n)
    labels[rows, cols] = torch.randint(1, MAX_LEVEL + 1, (n,), generator=generator)
    target = torch.arange(batch) * k
    return scores, labels.to(device), target.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fwd_bwd_ms(step, scores, device) -> float:
    scores.grad = None
    _sync(device)
    t0 = time.perf_counter()
    step().backward()
    _sync(device)
    return (time.perf_counter() - t0) * 1e3


def time_pair(steps, scores, device, repeats: int, budget_s: float) -> list[float]:
    """Median ms of forward+backward for each of ``steps``, interleaved so both see the same load.

    The steps alternate inside every repeat (order flipped each time) after a warm-up; repeating stops
    at ``repeats`` or once ``budget_s`` is spent (but not before ``MIN_REPEATS``).
    """
    for _ in range(WARMUP):
        for step in steps:
            _fwd_bwd_ms(step, scores, device)
    times = [[] for _ in steps]
    started = time.perf_counter()
    for rep in range(repeats):
        order = range(len(steps)) if rep % 2 == 0 else reversed(range(len(steps)))
        for i in order:
            times[i].append(_fwd_bwd_ms(steps[i], scores, device))
        if rep + 1 >= MIN_REPEATS and time.perf_counter() - started > budget_s:
            break
    return [statistics.median(ts) for ts in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="max timed repeats per shape")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="wall-time cap per timing")
    args = parser.parse_args()
    if args.repeats < 1 or args.threads < 1 or args.budget_s <= 0:
        parser.error("--repeats and --threads must be >= 1 and --budget-s > 0")
    torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    t = DEFAULT_TEMPERATURE
    print(f"--repeats {args.repeats} (x{SMALL_SHAPE_REPEAT_FACTOR} below {SMALL_SHAPE_ELEMS} scores; "
          f"median, >= {MIN_REPEATS}, <= {args.budget_s:g} s per shape), warm-up {WARMUP}, "
          f"threads {args.threads}, torch {torch.__version__}\n")
    print("| device | B | K | cross_entropy ms | h_infonce ms | ratio h/ce |")
    print("|---|---:|---:|---:|---:|---:|")
    for device in devices:
        for batch in BATCH_SIZES:
            for k in CANDIDATES_PER_QUERY:
                gen = torch.Generator().manual_seed(SEED)
                scores, labels, target = make_inputs(batch, k, device, gen)
                small = scores.numel() < SMALL_SHAPE_ELEMS
                repeats = args.repeats * (SMALL_SHAPE_REPEAT_FACTOR if small else 1)
                ce, hi = time_pair(
                    [lambda: F.cross_entropy(scores / t, target), lambda: h_infonce(scores, labels, t)],
                    scores, device, repeats, args.budget_s)
                print(f"| {device.type} | {batch} | {k} | {ce:.3f} | {hi:.3f} | {hi / ce:.2f} |", flush=True)


if __name__ == "__main__":
    main()
