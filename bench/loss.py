"""Benchmark: forward+backward time of ``h_infonce`` against ``F.cross_entropy`` on in-batch scores.

Layout (DPR in-batch with K candidates per query): the score matrix is ``[B, B*K]``; row ``i``'s own
candidates are columns ``i*K .. i*K+K-1``.  ``h_infonce`` gets those K columns at levels drawn from 1..5
and level 0 elsewhere; ``cross_entropy`` gets ``target = i*K``.  Two kinds of scores:

* ``cosine``: uniform in [-1, 1], as a normalised bi-encoder produces (``s/t`` spans 40 at t = 0.05);
* ``dot``: uniform in [50, 200], unnormalised dot products as DPR and ANCE score (``s/t`` spans 3000,
  far past the range of ``exp``).

Each row is run with ``torch.set_num_threads`` at each of ``--threads``.  Both losses are timed
interleaved in this process (the machine may be shared): the median of several repeats after a warm-up,
bounded in wall time per row; small shapes get more repeats.  Only the ratio is meant to be compared
across runs.  Each row also counts the ATen operations one forward + backward dispatches (a
``TorchDispatchMode``): on CPU each costs a few microseconds whatever its size, so at small B that count,
not the arithmetic, sets the time (B = 8 is all fixed cost).  Prints the load average before and after,
and one markdown table.

    .venv/bin/python bench/loss.py [--threads 1,2] [--batch-sizes 8,64,256,1024] [--k 8] [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from crops_ray.losses import DEFAULT_TEMPERATURE, h_infonce

BATCH_SIZES = "8,64,256,1024"
THREADS = "1,2"
CANDIDATES_PER_QUERY = 8
SCORE_KINDS = {"cosine": (-1.0, 1.0), "dot": (50.0, 200.0)}  # uniform ranges
MAX_LEVEL = 5
DEFAULT_REPEATS = 20
DEFAULT_BUDGET_S = 8.0  # per row: stop repeating once this much wall time is spent
WARMUP = 2
SMALL_SHAPE_ELEMS = 2**20  # score matrices smaller than this get SMALL_SHAPE_REPEAT_FACTOR x repeats
SMALL_SHAPE_REPEAT_FACTOR = 10
MIN_REPEATS = 3
SEED = 0


def make_inputs(batch: int, k: int, kind: str, device: torch.device, generator: torch.Generator):
    """Return (scores [B, B*K] requiring grad, level labels [B, B*K], cross-entropy target [B])."""
    n = batch * k
    low, high = SCORE_KINDS[kind]
    scores = (low + (high - low) * torch.rand(batch, n, generator=generator)).to(device).requires_grad_(True)
    labels = torch.zeros(batch, n, dtype=torch.long)
    labels[torch.arange(batch).repeat_interleave(k), torch.arange(n)] = torch.randint(
        1, MAX_LEVEL + 1, (n,), generator=generator
    )
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


class _CountOps(TorchDispatchMode):
    """Counts the ATen operations dispatched inside the ``with`` block (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops(step, scores) -> int:
    """ATen operations one forward + backward of ``step`` dispatches."""
    scores.grad = None
    with _CountOps() as counter:
        step().backward()
    return counter.count


def bench_row(device, threads, kind, batch, k, repeats, budget_s) -> dict:
    """Time both losses on one input; ``threads`` is ``None`` on a GPU."""
    t = DEFAULT_TEMPERATURE
    scores, labels, target = make_inputs(batch, k, kind, device, torch.Generator().manual_seed(SEED))
    if scores.numel() < SMALL_SHAPE_ELEMS:
        repeats *= SMALL_SHAPE_REPEAT_FACTOR
    steps = [lambda: F.cross_entropy(scores / t, target), lambda: h_infonce(scores, labels, t)]
    ce, hi = time_pair(steps, scores, device, repeats, budget_s)
    ce_ops, hi_ops = (count_ops(step, scores) for step in steps)
    return {
        "device": device.type,
        "threads": threads if threads is not None else "-",
        "scores": kind,
        "B": batch,
        "K": k,
        "cross_entropy ms": ce,
        "h_infonce ms": hi,
        "ratio h/ce": hi / ce,
        "ATen ops ce": ce_ops,
        "ATen ops h": hi_ops,
    }


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default=THREADS, help="comma-separated torch CPU thread counts")
    parser.add_argument("--batch-sizes", default=BATCH_SIZES, help="comma-separated B")
    parser.add_argument("--k", type=int, default=CANDIDATES_PER_QUERY, help="candidates per query")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="max timed repeats per row")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="wall-time cap per row")
    args = parser.parse_args(argv)
    threads, batch_sizes = _ints(args.threads), _ints(args.batch_sizes)
    if min(threads + batch_sizes) < 1 or args.k < 1 or args.repeats < 1 or args.budget_s <= 0:
        parser.error("--threads, --batch-sizes, --k and --repeats must be >= 1 and --budget-s > 0")

    load_before = os.getloadavg()
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for kind in SCORE_KINDS:
            for batch in batch_sizes:
                rows.append(bench_row(torch.device("cpu"), n_threads, kind, batch, args.k, args.repeats, args.budget_s))
                print(f"  done: {rows[-1]}", file=sys.stderr, flush=True)
    if torch.cuda.is_available():
        for kind in SCORE_KINDS:
            for batch in batch_sizes:
                rows.append(bench_row(torch.device("cuda"), None, kind, batch, args.k, args.repeats, args.budget_s))
    table = pd.DataFrame(rows).round({"cross_entropy ms": 3, "h_infonce ms": 3, "ratio h/ce": 2})
    load = [", ".join(f"{v:.1f}" for v in loads) for loads in (load_before, os.getloadavg())]
    print(
        f"h_infonce vs cross_entropy, forward + backward, t = {DEFAULT_TEMPERATURE}, torch {torch.__version__}; "
        f"median of <= {args.repeats} repeats (x{SMALL_SHAPE_REPEAT_FACTOR} below {SMALL_SHAPE_ELEMS} scores, "
        f">= {MIN_REPEATS}, <= {args.budget_s:g} s per row), warm-up {WARMUP}; "
        f"load average (1, 5, 15 min) before {load[0]}, after {load[1]}\n"
    )
    print(table.to_markdown(index=False))
    return table


if __name__ == "__main__":
    main()
