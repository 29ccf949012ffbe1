"""Fixed Ray costs on a small machine: the parquet reader, the number of idle workers Ray keeps, and a Ray Train run.

    python bench/ray_overhead.py [--rows 20000] [--repeats 3] [--part data|train|both]

Each setting runs in a fresh process with its own local Ray (2 CPUs), on the same parquet shards:
- ``read``: ``read_parquet(...).map_batches(...).materialize()``, the first step of every engine stage;
- ``groupby``: ``groupby(bucket).map_groups(...)``, the shuffle of the users and pairs stages.
Settings: Ray 2.60's defaults (DataSourceV2 parquet reader, ``num_workers_soft_limit`` = CPUs), and what
``crops_ray.runtime.init_ray`` sets on a local Ray (the V1 reader; ``local_system_config``). Prints the median
seconds of the warm repeats (the first, which starts the worker processes, is printed apart) and the ratio to
Ray's defaults measured in the same run.

``train`` (``--part train``): a 1-worker ``TorchTrainer`` whose loop reads a 100-row dataset shard and reports one
checkpoint, with Ray Train's default 2 s health-check poll and with ``crops_ray.runtime.LOCAL_TRAIN_ENV``, each in
a fresh process with the kept idle workers; prints fit()'s wall time, the seconds before the loop starts and
after it ends (median of the warm repeats), and the ratio to the default.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SETTINGS = {
    "Ray defaults": {"v2_reader": True, "keep_workers": False},
    "V1 parquet reader": {"v2_reader": False, "keep_workers": False},
    "crops-ray (V1 reader + kept workers)": {"v2_reader": False, "keep_workers": True},
}


def _child(folder: str, setting: dict, repeats: int) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc
    import ray
    import ray.data

    from crops_ray.runtime import local_system_config

    kwargs = {"_system_config": local_system_config(2)} if setting["keep_workers"] else {}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.use_datasource_v2 = setting["v2_reader"]

    def same(batch: pa.Table) -> pa.Table:
        return batch

    def bucket(batch: pa.Table) -> pa.Table:
        return batch.append_column("bucket", pc.bit_wise_and(batch["n"], 7))

    out: dict = {"read": [], "groupby": []}
    for _ in range(repeats + 1):
        start = time.perf_counter()
        ray.data.read_parquet(folder).map_batches(same, batch_format="pyarrow").materialize()
        out["read"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ray.data.read_parquet(folder).map_batches(bucket, batch_format="pyarrow").groupby(
            "bucket", num_partitions=2
        ).map_groups(same, batch_format="pyarrow").materialize()
        out["groupby"].append(time.perf_counter() - start)
    ray.shutdown()
    return out


TRAIN_SETTINGS = {
    "Ray Train defaults (2 s health-check poll)": {},
    "crops-ray local (LOCAL_TRAIN_ENV)": {"local_train_env": True},
}


def _train_loop(config: dict) -> None:
    import tempfile
    import time

    import ray.train

    config["queue"].put(("start", time.time()))
    for _ in ray.train.get_dataset_shard("train").iter_batches(batch_size=8):
        pass
    with tempfile.TemporaryDirectory() as folder:
        open(os.path.join(folder, "weights"), "w").write("x")
        config["queue"].put(("end", time.time()))
        ray.train.report({"done": 1}, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _train_child(setting: dict, repeats: int) -> dict:
    import pyarrow as pa
    import ray
    import ray.data
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    from crops_ray.runtime import LOCAL_TRAIN_ENV, local_system_config

    if setting.get("local_train_env"):
        os.environ.update(LOCAL_TRAIN_ENV)  # inherited by the local Ray's processes, then gone from the driver
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _system_config=local_system_config(2)
    )
    for key in LOCAL_TRAIN_ENV:
        os.environ.pop(key, None)
    ray.data.DataContext.get_current().enable_progress_bars = False
    out: dict = {"fit": [], "before": [], "after": []}
    for run in range(repeats + 1):
        queue = Queue(actor_options={"num_cpus": 0})
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={"queue": queue},
            scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 2}),
            run_config=RunConfig(name=f"run{run}", storage_path=tempfile.mkdtemp(prefix="bench-train-")),
            datasets={"train": ray.data.from_arrow(pa.table({"x": list(range(100))}))},
        )
        start = time.time()
        trainer.fit()
        end = time.time()
        events = dict(queue.get() for _ in range(queue.qsize()))
        ray.kill(queue.actor)
        out["fit"].append(end - start)
        out["before"].append(events["start"] - start)
        out["after"].append(end - events["end"])
    ray.shutdown()
    return out


def _train_part(repeats: int) -> dict:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    for key in ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "RAY_ADDRESS"):
        env.pop(key, None)
    results = {}
    for name in TRAIN_SETTINGS:
        print(f"running: {name}", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, __file__, "--train-child", name, "--repeats", str(repeats)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    base = statistics.median(results[next(iter(TRAIN_SETTINGS))]["fit"][1:])
    print(
        "\nA Ray Train run's fixed cost: 1 worker, 100-row dataset "
        f"shard, one checkpoint; median of {repeats} warm runs"
    )
    print("| setting | fit s (first) | fit s | vs defaults | before the loop s | after the loop s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        fit = statistics.median(r["fit"][1:])
        print(
            f"| {name} | {r['fit'][0]:.2f} | {fit:.2f} | {fit / base:.2f} | {statistics.median(r['before'][1:]):.2f} | "
            f"{statistics.median(r['after'][1:]):.2f} |"
        )
    return results


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--part", choices=("data", "train", "both"), default="both")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--train-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.train_child:
        print(json.dumps(_train_child(TRAIN_SETTINGS[args.train_child], args.repeats)))
        return {}
    if args.child:
        folder, name = args.child.split("::")
        print(json.dumps(_child(folder, SETTINGS[name], args.repeats)))
        return {}

    if args.part == "train":
        return _train_part(args.repeats)
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tempfile.mkdtemp(prefix="bench-ray-")
    rng = np.random.default_rng(0)
    for shard in range(2):  # two shards, as a small search log
        n = args.rows // 2
        pq.write_table(
            pa.table({"n": np.arange(n), "query": [f"q{i}" for i in rng.integers(0, 500, n)]}),
            f"{folder}/part-{shard}.parquet",
        )
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    results = {}
    for name in SETTINGS:
        print(f"running: {name}", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, __file__, "--child", f"{folder}::{name}", "--repeats", str(args.repeats)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    base = {op: statistics.median(results["Ray defaults"][op][1:]) for op in ("read", "groupby")}
    print(
        f"Ray Data fixed costs, {args.rows:,} rows in 2 parquet shards, "
        f"local Ray with 2 CPUs; median of {args.repeats} warm runs"
    )
    print("| setting | read s (first) | read s | vs defaults | groupby s (first) | groupby s | vs defaults |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        read, group = statistics.median(r["read"][1:]), statistics.median(r["groupby"][1:])
        print(
            f"| {name} | {r['read'][0]:.2f} | {read:.2f} | {read / base['read']:.2f} | {r['groupby'][0]:.2f} | "
            f"{group:.2f} | {group / base['groupby']:.2f} |"
        )
    if args.part == "both":
        results["train"] = _train_part(args.repeats)
    return results


if __name__ == "__main__":
    main()
