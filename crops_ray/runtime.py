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


# Ray Train's controller polls its worker group every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default): a run
# notices that its workers finished up to 2 s late and waits as long again at start. On a local Ray a poll is
# a cheap local call, so a run polls every 0.25 s: ~4 s less per training run (bench/ray_overhead.py, "train").
LOCAL_TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}


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
    local = not os.environ.get("RAY_ADDRESS")
    train_env: dict = {}
    if local:
        # address="local": a new local Ray, never a cluster someone else `ray start`-ed on this machine (plain
        # ray.init() would join the latest one). To join a cluster, set RAY_ADDRESS.
        # Workers of a local Ray inherit this process's environment (set just above), so no runtime_env: one
        # costs every worker process an extra setup step (an actor started in 2.2 s with it, 1.4 s without).
        kwargs.update(
            address="local", num_cpus=num_cpus, include_dashboard=False, _system_config=local_system_config(num_cpus)
        )
        # LOCAL_TRAIN_ENV is set for the local Ray's processes only (they inherit it when ray.init starts them): set
        # in the driver, Ray Train would copy it into a runtime_env for its controller and workers, which then could
        # not reuse the idle worker processes kept above.
        train_env = {k: v for k, v in LOCAL_TRAIN_ENV.items() if k not in os.environ}
        # Ray 2.60 turns token authentication on for a new local Ray and says so in a WARNING line that reads like a
        # failure; the behaviour stays (set RAY_AUTH_MODE to choose), the note goes.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # Under `ray job submit` the job's runtime env (runtime_env.yaml) applies; repeating keys here would conflict.
    os.environ.update(train_env)
    try:
        ray.init(**kwargs)
    finally:
        for key in train_env:
            os.environ.pop(key, None)
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
    if local:
        logging.getLogger("ray.data.dataset").addFilter(_no_cpu_note_between_stages)


def _no_cpu_note_between_stages(record: logging.LogRecord) -> bool:
    """Drop Ray Data's "the cluster does not have any available CPUs ... will hang" note on a local Ray.

    Ray Data checks for a free CPU when a dataset starts; on a local Ray the previous stage's actor pool is still
    releasing its CPUs at that moment (the note came at the start of most engine stages on 2 cores, and no stage
    ever hung). On a cluster, where another job can hold the CPUs, the note stays.
    """
    return "does not have any available CPUs" not in record.getMessage()
