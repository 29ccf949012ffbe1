"""The engine's parquet plumbing: stage timing (:class:`Clock`), reading and writing a stage's parquet folder,
and counters summed over a folder on the driver (:func:`sum_counts`, :func:`count_true`).

Every stage writes parquet, so a large run never holds its data in the object store, and each is timed.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.compute as pc

from crops_ray import schema as S
from crops_ray import storage


class Clock:
    """Numbers the stages (``[n/total] what``) and records each one's seconds in ``seconds``."""

    def __init__(self, progress, total: int):
        self.progress, self.total, self.n, self.seconds = progress, total, 0, {}

    @contextmanager
    def stage(self, name: str, what: str):
        self.n += 1
        self.progress(f"[{self.n}/{self.total}] {what}")
        started = time.time()
        yield
        self.seconds[name] = round(time.time() - started, 2)
        self.progress(f"      {name}: {self.seconds[name]:.1f}s")


def read_parquet(folder_or_files, columns=None):
    """A Ray Dataset over a parquet folder or a list of files (None when there are no files)."""
    import ray.data

    files = storage.parquet_files(folder_or_files) if isinstance(folder_or_files, str) else folder_or_files
    if not files:
        return None
    ds = ray.data.read_parquet(files)
    return ds.select_columns(columns) if columns else ds  # Ray Data pushes the projection into the read


def write_parquet(ds, folder: str, schema: pa.Schema) -> int:
    """Write ``ds`` as parquet shards; an empty result still leaves one file with the schema. Returns rows."""
    import pyarrow.parquet as pq

    os.makedirs(folder, exist_ok=True)
    if ds is not None:
        ds.write_parquet(folder)
    files = storage.parquet_files(folder)
    if not files:
        pq.write_table(schema.empty_table(), f"{folder}/part-empty.parquet")
        return 0
    return S.count_rows(files)


def sum_counts(folder: str, fn, columns: list[str], **kwargs) -> dict[str, float]:
    """Counters computed by ``fn`` (one-row tables) over a parquet folder, streamed on the driver.

    Only the named columns are read, batch by batch, so this stays light on large outputs, and it costs no Ray
    job (a Ray Data pass would start tasks just to count).
    """
    import pyarrow.dataset as pads

    total: dict[str, float] = {}  # integer counters stay ints; float sums (a theta total) stay floats
    files = storage.parquet_files(folder)
    if not files:
        return total
    for batch in pads.dataset(files, format="parquet").to_batches(columns=columns):
        counts = fn(pa.Table.from_batches([batch]), **kwargs)
        for name in counts.column_names:
            total[name] = total.get(name, 0) + (pc.sum(counts[name]).as_py() or 0)
    return total


def count_true(mask) -> int:
    """How many entries of a boolean array are true (nulls count as false)."""
    return int(pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0)
