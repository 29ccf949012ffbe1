"""Benchmark: training throughput of crops_ray.train (Ray Train) against sentence-transformers, 1 and 2 workers.

The anchor is what a user would otherwise write: sentence-transformers' ``MultipleNegativesRankingLoss`` training
the same model (mean pooling, normalised, scale 1/temperature) on the same groups in one process, each example as
(query, anchor, the group's other candidates as hard negatives), so both encode the same texts per step; a plain
loop over the loss module (``SentenceTransformerTrainer`` needs the ``datasets`` package, and adds data loading).
Throughput is steady state: the first step (start-up, lazy initialisation) is not counted; the Ray rows also give
the wall time including Ray Train's start-up. The anchor runs in a Ray task (the CPU priority and threads of a
training worker), once before and once after the Ray rows; their mean evens out drift in a shared machine's load.
Every measurement starts on a quiet machine: after Ray starts (its pre-started idle workers import for ~20 s) and
between rows the benchmark waits until the CPUs are below ``QUIET_CPU_PERCENT`` busy. Compare rows of one run only.
Rows, each with its ratio to what it is compared with: crops_ray.train on all cores (against the anchor, same
cores), on 1 thread, 2 DDP workers of 1 thread each (against 1 thread), and with the document tower frozen (the CPU
demo's query-side fine-tuning; against both towers). What two processes can reach on this machine is measured, not
assumed: the anchor on 1 thread alone, then two copies at once with no communication between them (their summed
rate against one alone: the machine's ceiling for two workers, which shared caches and memory bandwidth keep below
the core count).

    .venv/bin/python bench/train.py [--steps 20] [--batch-size 16] [--model minilm] [--max-length 64]

Needs ``pip install -c constraints/cpu.txt sentence-transformers`` for the anchor row.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time

import pyarrow as pa
import ray
import torch

from crops_ray import storage
from crops_ray.hla import GroupConfig, build_groups, load_samples, write_groups
from crops_ray.losses import DEFAULT_TEMPERATURE
from crops_ray.plumbing import model_path
from crops_ray.report.markdown import rows_table
from crops_ray.runtime import init_ray
from crops_ray.train import TrainConfig, train
from crops_ray.world.generator import generate_world, world_config

GROUP_SIZE = 8
SEED = 0
QUIET_CPU_PERCENT = 15.0  # a measurement starts once the machine's CPUs are this idle ...
QUIET_WAIT_S = 90.0  # ... or after this long, whichever comes first


def wait_quiet() -> float:
    """Wait until the CPUs are below QUIET_CPU_PERCENT busy over a second (at most QUIET_WAIT_S); the last reading."""
    import psutil

    deadline = time.monotonic() + QUIET_WAIT_S
    busy = psutil.cpu_percent(interval=1.0)
    while busy > QUIET_CPU_PERCENT and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=1.0)
    return busy


def bench_config(
    workers: int,
    threads: int,
    doc_tower: str,
    steps: int,
    batch_size: int = 16,
    model: str = "minilm",
    max_length: int = 64,
    lr: float = 5e-5,
) -> TrainConfig:
    """A crops_ray.train run of ``steps`` steps as this benchmark times it: one checkpoint and one report at the end,
    the groups in file order, ``threads`` torch threads per worker (0: the node's cores / workers)."""
    return TrainConfig(
        model=model,
        max_length=max_length,
        batch_size=batch_size,
        lr=lr,
        max_steps=steps,
        num_workers=workers,
        torch_threads=threads,
        shared_towers=doc_tower == "train",
        doc_tower=doc_tower,
        checkpoint_every=steps,
        log_every=steps,
        shuffle_buffer=0,
        seed=SEED,
    )


def make_groups(folder: str, scale: str) -> str:
    """HLA groups of exactly GROUP_SIZE candidates from a generated world (fixed columns for the anchor)."""
    generate_world(os.path.join(folder, "world"), world_config(scale, seed=SEED), progress=lambda *_: None)
    samples, _ = load_samples(os.path.join(folder, "world"))
    groups = build_groups(samples, GroupConfig(group_size=GROUP_SIZE, seed=SEED))
    full = groups.filter(pa.array([len(t) == GROUP_SIZE for t in groups["texts"].to_pylist()]))
    write_groups(full, os.path.join(folder, "groups"))
    return os.path.join(folder, "groups")


def sentence_transformers_rate(
    groups: str, model: str, steps: int, batch: int, max_length: int, lr: float, threads: int = 0
) -> float:
    """Steady samples/s of MultipleNegativesRankingLoss on the same groups, one process.

    Runs as a Ray task so it gets what a Ray Train worker gets (Ray starts workers at nice 15: on a shared machine
    a driver process would win CPU from them) and the same torch threads (this node's cores, or ``threads``).
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    torch.manual_seed(SEED)
    st = SentenceTransformer(model_path(model), device="cpu")
    st.max_seq_length = max_length
    loss_fn = MultipleNegativesRankingLoss(st, scale=1.0 / DEFAULT_TEMPERATURE)
    optimizer = torch.optim.AdamW(st.parameters(), lr=lr, weight_decay=0.01)
    rows = storage.read_table(groups).to_pylist()
    st.train()
    started = None
    for step in range(steps):
        part = [rows[(step * batch + i) % len(rows)] for i in range(batch)]
        columns = [[g["query"] for g in part]] + [[g["texts"][j] for g in part] for j in range(GROUP_SIZE)]
        features = [(st.preprocess if hasattr(st, "preprocess") else st.tokenize)(col) for col in columns]
        loss = loss_fn(features, torch.zeros(batch))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(st.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 0:
            started = time.perf_counter()
    return (steps - 1) * batch / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per trainer (the first is not timed)")
    p.add_argument("--batch-size", type=int, default=16, help="queries per worker per step")
    p.add_argument("--model", default="minilm")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--scale", default="tiny", help="world scale the groups come from")
    p.add_argument("--lr", type=float, default=5e-5)  # bench_config's default
    args = p.parse_args()
    if args.steps < 2 or args.batch_size < 1:
        p.error("--steps must be >= 2 and --batch-size >= 1")

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        groups = make_groups(tmp, args.scale)
        n = storage.read_table(groups).num_rows
        print(
            f"{n} groups of {GROUP_SIZE} candidates ({args.scale} world), model {args.model}, max_length "
            f"{args.max_length}, {args.steps} steps, {args.batch_size} queries per worker per step, {os.cpu_count()} "
            f"CPUs, load average at start {os.getloadavg()[0]:.1f}\n"
        )
        init_ray()
        task = ray.remote(num_cpus=1)(sentence_transformers_rate)
        anchor_args = (groups, args.model, args.steps, args.batch_size, args.max_length, args.lr)

        def anchor(threads: int = 0, copies: int = 1) -> list[float]:
            wait_quiet()
            return ray.get([task.remote(*anchor_args, threads=threads) for _ in range(copies)])

        has_anchor = importlib.util.find_spec("sentence_transformers") is not None
        if has_anchor:
            (st_before,) = anchor()
        else:
            st_before = None
            print(
                "sentence-transformers is not installed: no anchor row (pip install -c constraints/cpu.txt "
                "sentence-transformers)\n"
            )
        # (label, workers, torch threads per worker (0: the node's cores / workers), document tower)
        setups = [
            ("crops_ray.train H-InfoNCE, all cores", 1, 0, "train"),
            ("crops_ray.train H-InfoNCE, 1 thread", 1, 1, "train"),
            ("crops_ray.train H-InfoNCE, DDP (gloo), 1 thread each", 2, 1, "train"),
            ("crops_ray.train H-InfoNCE, frozen document tower, all cores", 1, 0, "frozen"),
        ]
        rates = {}
        for label, workers, threads, tower in setups:
            cfg = bench_config(
                workers, threads, tower, args.steps, args.batch_size, args.model, args.max_length, args.lr
            )
            name = f"bench-{len(rates)}"
            wait_quiet()
            m = train(groups, os.path.join(tmp, name), cfg, name=name, progress=lambda *_: None)
            rates[label] = (workers, args.batch_size * workers, m["samples_per_s"], m["wall_s"])
        st_rate = ceiling = None
        if has_anchor:  # the anchor runs before and after the Ray rows: their mean evens out load drift
            (st_after,) = anchor()
            st_rate = (st_before + st_after) / 2
            (solo,) = anchor(threads=1)
            pair = anchor(threads=1, copies=2)
            ceiling = (solo, sum(pair))
            print(
                f"sentence-transformers samples/s before {st_before:.1f}, after {st_after:.1f}; on 1 thread alone "
                f"{solo:.1f}, two copies at once {' + '.join(f'{r:.1f}' for r in pair)}\n"
            )

    # Each row's ratio to what it should be compared with: all cores to the anchor (same cores), two 1-thread
    # workers to one 1-thread worker (what two processes can reach here is the last row), the frozen tower to both.
    labels = [s[0] for s in setups]
    versus = {labels[0]: (st_rate, "sentence-transformers"), labels[1]: (rates[labels[0]][2], labels[0])}
    versus[labels[2]] = (rates[labels[1]][2], labels[1])
    versus[labels[3]] = (rates[labels[0]][2], labels[0])
    table = []
    if st_rate:
        table.append(
            {"trainer": "sentence-transformers MNRL, 1 process (mean of before/after)", "workers": "1"}
            | {"global batch": str(args.batch_size), "samples/s": f"{st_rate:.1f}", "wall s": "-", "ratio": "1.00"}
            | {"against": "-"}
        )
    for label, (workers, global_batch, rate, wall) in rates.items():
        base, against = versus[label]
        table.append(
            {"trainer": label, "workers": str(workers), "global batch": str(global_batch), "samples/s": f"{rate:.1f}"}
            | {"wall s": f"{wall:.0f}", "ratio": f"{rate / base:.2f}" if base else "-", "against": against}
        )
    if ceiling:
        solo, pair = ceiling
        table.append(
            {"trainer": "machine's ceiling: 2 sentence-transformers processes, 1 thread each, no DDP", "workers": "2"}
            | {"global batch": str(2 * args.batch_size), "samples/s": f"{pair:.1f}", "wall s": "-"}
            | {"ratio": f"{pair / solo:.2f}", "against": f"the same on 1 thread alone ({solo:.1f} samples/s)"}
        )
    print(rows_table(table, text=True, align=["left", "right", "right", "right", "right", "right", "left"]))
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
