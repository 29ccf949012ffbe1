"""Benchmark: where the CPU goes while crops_ray.train trains, per process (what bench/train.py's DDP row loses).

Runs one training of full MiniLM-L6 (both towers, 1 torch thread per worker, the tiny world's groups, as
bench/train.py does) with ``--workers`` workers and, once training is steady, reads every process's CPU time twice
``--window-s`` apart (psutil). Prints each process busier than 1 % of a core, as a share of one core. A worker that
computes all the time reads ~100 %; what a DDP worker reads below that it spends waiting, mostly at the step's
gradient all-reduce for the slower rank. Then, for scale, the all-reduce alone: two processes (gloo, 1 thread each)
all-reduce a float32 tensor of the model's parameter count; the median of 5. And how unequal the two ranks' halves
of a global batch are: tokens (each text truncated at max_length 64) of the larger half over the mean of both.

    .venv/bin/python bench/train_cpu.py [--workers 2] [--steps 16] [--warmup-s 35] [--window-s 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import threading
import time

import psutil

from crops_ray.runtime import init_ray
from crops_ray.train import train

# bench/train.py, loaded from its file: bench/ on sys.path would shadow the serve/ package with bench/serve.py.
_spec = importlib.util.spec_from_file_location("bench_train", os.path.join(os.path.dirname(__file__), "train.py"))
bench_train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_train)


def cpu_shares(warmup_s: float, window_s: float, out: dict) -> None:
    """After ``warmup_s``, fill ``out`` with {"pid command": share of one core} over ``window_s``."""
    time.sleep(warmup_s)
    procs = list(psutil.process_iter(["cmdline"]))
    first = {}
    for p in procs:
        try:
            first[p.pid] = sum(p.cpu_times()[:2])
        except psutil.Error:
            pass
    started = time.monotonic()
    time.sleep(window_s)
    elapsed = time.monotonic() - started
    for p in procs:
        try:
            share = (sum(p.cpu_times()[:2]) - first[p.pid]) / elapsed
        except (psutil.Error, KeyError):
            continue
        if share > 0.01:
            out[f"{p.pid} {' '.join(p.info['cmdline'] or [])[:60]}"] = share


def _allreduce_worker(rank: int, numel: int, port: int, out) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    x = torch.randn(numel)
    times = []
    for i in range(7):
        dist.barrier()
        started = time.perf_counter()
        dist.all_reduce(x)
        if i >= 2:  # two warm-up rounds
            times.append(time.perf_counter() - started)
    if rank == 0:
        out.put(sorted(times)[len(times) // 2])
    dist.destroy_process_group()


def allreduce_ms(numel: int) -> float:
    """Median ms of one gloo all-reduce of ``numel`` float32 between two local 1-thread processes."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(_allreduce_worker, args=(numel, port, out), nprocs=2, start_method="spawn")
    return out.get() * 1e3


def halves_imbalance(groups: str, batch: int, model: str, max_length: int) -> list[float]:
    """Per global step of 2 x ``batch`` groups: tokens of the larger rank's half over the mean of both halves."""
    from transformers import AutoTokenizer

    from crops_ray import storage
    from crops_ray.plumbing import model_path

    tokenizer = AutoTokenizer.from_pretrained(model_path(model))
    rows = storage.read_table(groups).to_pylist()

    def tokens(part):
        texts = [g["query"] for g in part] + [t for g in part for t in g["texts"]]
        return sum(min(max_length, len(ids)) for ids in tokenizer(texts)["input_ids"])

    ratios = []
    for start in range(0, len(rows) - 2 * batch + 1, 2 * batch):
        a, b = tokens(rows[start : start + batch]), tokens(rows[start + batch : start + 2 * batch])
        ratios.append(max(a, b) / ((a + b) / 2))
    return ratios


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--warmup-s", type=float, default=35.0, help="from the start of training to the first reading")
    p.add_argument("--window-s", type=float, default=20.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-train-cpu-") as tmp:
        groups = bench_train.make_groups(tmp, "tiny")
        init_ray()
        bench_train.wait_quiet()
        shares: dict[str, float] = {}
        threading.Thread(target=cpu_shares, args=(args.warmup_s, args.window_s, shares), daemon=True).start()
        cfg = bench_train.bench_config(args.workers, 1, "train", args.steps)
        m = train(groups, os.path.join(tmp, "run"), cfg, name="cpu-probe", progress=lambda *_: None)
        imbalance = halves_imbalance(groups, cfg.batch_size, cfg.model, cfg.max_length)
    if not shares:
        raise SystemExit("training ended before the reading: raise --steps or lower --warmup-s")
    print(
        f"{args.workers} worker(s), 1 thread each: {m['samples_per_s']:.1f} samples/s; CPU per process over "
        f"{args.window_s:g} s of steady training (share of one core):"
    )
    for name, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"{share * 100:6.1f} %  {name}")
    from transformers import AutoModel

    from crops_ray.plumbing import model_path

    numel = sum(t.numel() for t in AutoModel.from_pretrained(model_path(cfg.model)).parameters())
    ms = allreduce_ms(numel)
    print(
        f"larger half's tokens over the mean of both, {len(imbalance)} global batches of 2 x {cfg.batch_size} groups: "
        f"mean {sum(imbalance) / len(imbalance):.3f}, max {max(imbalance):.3f}"
    )
    print(f"gloo all-reduce of {numel / 1e6:.1f} M float32 (the model's gradients), 2 processes: {ms:.0f} ms")


if __name__ == "__main__":
    main()
