"""Training groups from a samples folder of any size, on Ray Data: the driver never holds the samples.

:func:`crops_ray.hla.build_groups` groups samples held in memory (the experiment's per-method sample sets); on a
team's logs the samples grow with the logs, so :func:`write_groups_dataset` runs the same rule as a Ray Data job:
each sample gets its query's bucket (:func:`crops_ray.hla.query_buckets`), one shuffle brings each bucket to one
task (``groupby``), which builds and orders its examples (:func:`crops_ray.hla.query_groups`) and writes them as
``part-BBBBB-SSS.parquet``. The files in name order are the table ``build_groups`` returns for the same samples and
seed (a test compares them); one task holds one bucket, about ``GroupConfig.samples_per_bucket`` samples.
"""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa

from crops_ray import storage
from crops_ray.hla import GROUP_COLUMNS, GroupConfig, check_sample_columns, num_buckets, query_buckets, query_groups
from crops_ray.schema import count_rows


def _with_bucket(batch: pa.Table, buckets: int) -> pa.Table:
    return batch.append_column("bucket", pa.array(query_buckets(batch["query"], buckets), pa.int64()))


def _write_bucket(df: pd.DataFrame, cfg: GroupConfig, root: str) -> pd.DataFrame:
    """One bucket's examples, ordered, as ``root/part-BBBBB-SSS.parquet`` (the same names on a retry)."""
    bucket = int(df["bucket"].iat[0])
    groups = query_groups(df.drop(columns="bucket"), cfg)
    for shard, start in enumerate(range(0, groups.num_rows, cfg.rows_per_shard)):
        storage.write_table(groups.slice(start, cfg.rows_per_shard), f"{root}/part-{bucket:05d}-{shard:03d}.parquet")
    return pd.DataFrame({"bucket": [bucket], "groups": [groups.num_rows]})


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
    buckets = num_buckets(count_rows(files), cfg)
    paths = [f if "://" in f else os.path.abspath(f) for f in files]
    with storage.Output(out) as root:
        written = (
            ray.data.read_parquet(paths)
            .select_columns(GROUP_COLUMNS)
            .map_batches(_with_bucket, batch_format="pyarrow", fn_kwargs={"buckets": buckets}, num_cpus=num_cpus)
            .groupby("bucket")
            .map_groups(
                _write_bucket,
                batch_format="pandas",
                fn_kwargs={"cfg": cfg, "root": root if "://" in root else os.path.abspath(root)},
                num_cpus=num_cpus,
            )
            .sum("groups")
        )
        if not written:
            raise ValueError(f"{samples}: no training examples (were the samples empty or all level 0?)")
    return int(written)
