"""Starting or joining Ray the same way on a laptop and under ``ray job submit``.

Under ``ray job submit`` (or with ``RAY_ADDRESS`` set) ``ray.init()`` joins the cluster; otherwise it starts a
local one sized to this machine. The runtime environment every worker needs (offline model loading, no usage
stats) is set here, in one place.
"""

from __future__ import annotations

import logging
import os
import sys

# Environment every Ray worker gets. Models load from local folders and PyPI packages, never from a hub, unless
# the driver was started with HF_HUB_OFFLINE=0 (a cluster that may pull models sets that before submitting).
def worker_env() -> dict[str, str]:
    offline = os.environ.get("HF_HUB_OFFLINE", "1")
    return {"HF_HUB_OFFLINE": offline, "TRANSFORMERS_OFFLINE": offline, "TOKENIZERS_PARALLELISM": "false"}


def local_system_config(num_cpus: int | None = None) -> dict:
    """Raylet settings for a local Ray: keep idle worker processes instead of killing them after 1 s.

    By default Ray keeps at most ``num_cpus`` idle workers; Ray Data's fractional-CPU tasks and actor pools
    start more, so after every stage the spares die and the next stage pays fresh Python start-ups and imports
    (pyarrow, torch, fsspec: seconds each on a small machine). A `groupby` of 20k rows measured 10.3 s with the
    default and 0.4 s with 8 kept workers (bench/ray_overhead.py). Each idle worker holds ~0.2-0.5 GB.
    """
    cpus = num_cpus or os.cpu_count() or 1
    return {"num_workers_soft_limit": max(8, 4 * cpus)}


def init_ray(num_cpus: int | None = None, quiet: bool = True) -> None:
    """Join the cluster named by RAY_ADDRESS (as under ``ray job submit``) or start a local one."""
    import ray

    if ray.is_initialized():
        return
    env = worker_env()
    for key, value in env.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict = {"log_to_driver": not quiet}
    if not os.environ.get("RAY_ADDRESS"):
        # address="local": a new local Ray, never a cluster someone else `ray start`-ed on this machine (plain
        # ray.init() would join the latest one). To join a cluster, set RAY_ADDRESS.
        # Workers of a local Ray inherit this process's environment (set just above), so no runtime_env: one
        # costs every worker process an extra setup step (an actor started in 2.2 s with it, 1.4 s without).
        kwargs.update(address="local", num_cpus=num_cpus, include_dashboard=False, _system_config=local_system_config(num_cpus))
    # Under `ray job submit` the job's runtime env (runtime_env.yaml) applies; repeating keys here would conflict.
    ray.init(**kwargs)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    # Ray 2.60's default parquet reader (DataSourceV2) starts 32 footer-reader actors for every read_parquet and
    # kills them after: 2-8 s per read on 2 cores, against 0.6-1 s for the V1 reader (bench/ray_overhead.py).
    # Our shards are few and large, so the V1 reader loses nothing; RAY_DATA_USE_DATASOURCE_V2=1 brings V2 back.
    ctx.use_datasource_v2 = os.environ.get("RAY_DATA_USE_DATASOURCE_V2", "0") == "1"
    ctx.enable_progress_bars = os.environ.get("CROPS_PROGRESS", "1") != "0"
    ctx.print_on_execution_start = False
    if not sys.stderr.isatty() and not os.environ.get("CROPS_VERBOSE"):
        # Off a terminal Ray Data logs its progress table every few seconds; our stages print their own lines.
        logging.getLogger("ray.data").setLevel(logging.WARNING)
