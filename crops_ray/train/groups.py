"""Training groups from a samples folder of any size, on Ray Data: the driver never holds the samples.

:func:`crops_ray.hla.build_groups` groups samples held in memory (the experiment's per-method sample sets); on a
team's logs the samples grow with the logs, so :func:`write_groups_dataset` runs the same rule as a Ray Data job:
one shuffle by query (``groupby``), :func:`crops_ray.hla.query_groups` on each query, one sort by
:func:`crops_ray.hla.example_order` (the seeded place of each example), written in that order. The table it writes
is the table ``build_groups`` returns for the same samples and seed (a test compares them).
"""

from __future__ import annotations

import os

from crops_ray import storage
from crops_ray.hla import GROUP_COLUMNS, GroupConfig, check_sample_columns, query_groups


def write_groups_dataset(samples: str | list[str], out: str, cfg: GroupConfig | None = None, num_cpus: float = 0.5):
    """Group the samples parquet at ``samples`` (a folder or files) into ``out`` (replaced whole); returns the
    number of groups written. Ray must be initialised (:func:`crops_ray.runtime.init_ray`)."""
    import pyarrow.dataset as pads
    import ray.data

    cfg = cfg or GroupConfig()
    files = storage.parquet_files(samples) if isinstance(samples, str) else list(samples)
    if not files:
        raise FileNotFoundError(f"{samples}: no samples parquet")
    check_sample_columns(pads.dataset(files, format="parquet").schema.names, str(samples))
    paths = [f if "://" in f else os.path.abspath(f) for f in files]
    ds = (
        ray.data.read_parquet(paths)
        .select_columns(GROUP_COLUMNS)
        .groupby("query")
        .map_groups(query_groups, batch_format="pandas", fn_kwargs={"cfg": cfg}, num_cpus=num_cpus)
        .sort(["order", "query"])
        .drop_columns(["order"])
    )
    ctx = ray.data.DataContext.get_current()
    previous = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True  # files named by task index, in the sorted order
    try:
        with storage.Output(out) as root:
            ds.write_parquet(root, min_rows_per_file=cfg.rows_per_shard)
            written = storage.parquet_files(root)
            rows = pads.dataset(written, format="parquet").count_rows() if written else 0
            if rows == 0:
                raise ValueError(f"{samples}: no training examples (were the samples empty or all level 0?)")
    finally:
        ctx.execution_options.preserve_order = previous
    return rows
