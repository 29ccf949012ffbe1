"""Log validation: every row either passes into the validated logs or lands in quarantine with a reason.

Runs as a Ray Data stage. Whole-file problems (not parquet, a required column missing) fail fast before any
row is read. Row problems never fail the job: the row goes to ``OUT/quarantine/<table>/`` with a ``reason``
column and a ``raw`` column holding the original values, and the summary checks rows in = kept + quarantined.

The row rules, their reasons and their settings are in :mod:`crops_ray.validate_rules` (:func:`check_batch`, pure
pyarrow, and :class:`ValidationConfig`); this module is the Ray Data job around them: the checker actor pool,
writing kept and quarantined rows, the summary.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from crops_ray import schema as S
from crops_ray import storage
from crops_ray.config import load_config
from crops_ray.layout import VALIDATION_JSON
from crops_ray.plumbing import map_with_actors

# ValidationConfig lives with the rules that read it; pipelines and tests import it from here too.
from crops_ray.validate_rules import RAW_COLUMN, ValidationConfig, check_batch, quarantine_later_copies


@dataclass
class TableSummary:
    rows_in: int = 0
    kept: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def conserved(self) -> bool:
        return self.rows_in == self.kept + self.quarantined


# ---------------------------------------------------------------------------------------------- row checks


class BatchChecker:
    """Ray Data callable class: holds the known video ids once per actor (a large catalog is shipped once)."""

    def __init__(self, table: str, cfg: ValidationConfig, video_ids):
        import ray

        if isinstance(video_ids, ray.ObjectRef):  # Ray Data passes constructor args through unresolved
            video_ids = ray.get(video_ids)
        self.table, self.cfg, self.video_ids = table, cfg, video_ids

    def __call__(self, batch: pa.Table) -> pa.Table:
        return check_batch(batch, self.table, self.cfg, self.video_ids)


# ---------------------------------------------------------------------------------------------- tables


def _kept(t: pa.Table) -> pa.Table:
    return t.filter(pc.is_null(t[S.QUARANTINE_REASON])).drop_columns([S.QUARANTINE_REASON, RAW_COLUMN])


def _quarantined(t: pa.Table) -> pa.Table:
    return t.filter(pc.is_valid(t[S.QUARANTINE_REASON]))


class _ShardWriter:
    """Rolls parquet shards of a fixed row count into a folder (the driver-side writer for ``videos``)."""

    def __init__(self, folder: str, rows_per_shard: int):
        self.folder, self.rows_per_shard, self.parts, self.buffer, self.rows = folder, rows_per_shard, 0, [], 0
        storage.makedirs(folder)

    def add(self, t: pa.Table) -> None:
        if t.num_rows:
            self.buffer.append(t)
            self.rows += t.num_rows
        while self.rows >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def _flush(self, rows: int) -> None:
        whole = pa.concat_tables(self.buffer, promote_options="permissive")
        storage.write_table(whole.slice(0, rows), f"{self.folder}/part-{self.parts:05d}.parquet")
        self.parts += 1
        rest = whole.slice(rows)
        self.buffer, self.rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> None:
        if self.rows:
            self._flush(self.rows)


def _validate_videos(files: list[str], out: str, cfg: ValidationConfig) -> pa.Array:
    """Row checks in Ray Data (order kept); the driver drops later copies of an id and writes the shards."""
    import ray.data

    # "First copy wins" needs file order: keep Ray Data's output in input order for this table.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ds = ray.data.read_parquet(files).map_batches(
        check_batch, fn_kwargs={"table": "videos", "cfg": cfg}, batch_format="pyarrow", batch_size=cfg.batch_size
    )
    kept_writer = _ShardWriter(f"{out}/videos", cfg.rows_per_shard)
    bad_writer = _ShardWriter(f"{out}/quarantine/videos", cfg.rows_per_shard)
    seen: set[str] = set()
    kept_ids: list[str] = []
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=cfg.batch_size):
        batch, kept = quarantine_later_copies(batch, seen)
        kept_ids.extend(kept)
        kept_writer.add(_kept(batch))
        bad_writer.add(_quarantined(batch))
    kept_writer.close()
    bad_writer.close()
    ray.data.DataContext.get_current().execution_options.preserve_order = False
    return pa.array(kept_ids, type=pa.string())


def _validate_events(table: str, files: list[str], out: str, cfg: ValidationConfig, video_ids: pa.Array) -> None:
    """search_log / rec_log: checked by an actor pool, kept and quarantined rows written by Ray Data."""
    import ray
    import ray.data
    from ray.data.expressions import col

    checked = map_with_actors(
        ray.data.read_parquet(files),
        BatchChecker,
        constructor_args=(table, cfg, ray.put(video_ids)),
        batch_size=cfg.batch_size,
        num_cpus=cfg.checker_num_cpus,
        pool_min=1,
        pool_max=cfg.checker_pool_max,
    )
    # Two lazy passes (kept, then quarantine) instead of materialising: large logs never sit in the object store.
    # (A single checker pass into a scratch folder, split by two plain reads, measured slower on small logs: every
    # Ray Data execution costs seconds of start-up on 2 cores.)
    checked.filter(expr=col(S.QUARANTINE_REASON).is_null()).drop_columns(
        [S.QUARANTINE_REASON, RAW_COLUMN]
    ).write_parquet(f"{out}/{table}")
    checked.filter(expr=col(S.QUARANTINE_REASON).is_not_null()).write_parquet(f"{out}/quarantine/{table}")


def _count_folder(folder: str, by_reason: bool = False) -> tuple[int, dict[str, int]]:
    """Rows in a folder of parquet shards, and (``by_reason``, for quarantine folders) counts per reason."""
    files = storage.parquet_files(folder)
    rows, reasons = S.count_rows(files), {}
    if rows and by_reason:
        t = storage.read_table(files, columns=[S.QUARANTINE_REASON])
        for row in t.group_by(S.QUARANTINE_REASON).aggregate([(S.QUARANTINE_REASON, "count")]).to_pylist():
            reasons[row[S.QUARANTINE_REASON]] = row[f"{S.QUARANTINE_REASON}_count"]
    return rows, dict(sorted(reasons.items()))


def validate_logs(logs: str, out: str, cfg: ValidationConfig | None = None, progress=print) -> dict[str, TableSummary]:
    """Validate ``logs`` (the contract's layout) into ``out``; returns the per-table summary.

    ``out`` is a local path or any URI pyarrow writes; on a local disk it is replaced atomically (storage.Output).
    """
    from crops_ray.runtime import init_ray

    cfg = cfg or ValidationConfig()
    storage.check_output(out, [logs])
    files = {t: S.table_files(logs, t) for t in S.TABLES}
    for table, paths in files.items():  # fail fast, before any row is read
        S.check_file_schemas(paths, table, cfg.columns)
    init_ray()
    summaries = {t: TableSummary(rows_in=S.count_rows(files[t])) for t in S.TABLES}
    started = time.time()
    with storage.Output(out, inputs=[logs]) as staging:
        progress(f"validating videos: {summaries['videos'].rows_in:,} rows in {len(files['videos'])} file(s)")
        video_ids = _validate_videos(files["videos"], staging, cfg)
        for table in ("search_log", "rec_log"):
            progress(f"validating {table}: {summaries[table].rows_in:,} rows in {len(files[table])} file(s)")
            _validate_events(table, files[table], staging, cfg, video_ids)
        for table, s in summaries.items():
            s.kept, _ = _count_folder(f"{staging}/{table}")
            s.quarantined, s.reasons = _count_folder(f"{staging}/quarantine/{table}", by_reason=True)
            if not s.conserved:
                raise RuntimeError(
                    f"validation lost rows in {table}: in {s.rows_in} != kept {s.kept} + quarantined {s.quarantined}"
                )
        report = {
            "logs": logs,
            "seconds": round(time.time() - started, 2),
            "tables": {t: asdict(s) for t, s in summaries.items()},
        }
        storage.write_bytes(f"{staging}/{VALIDATION_JSON}", json.dumps(report, indent=2).encode())
    return summaries


def format_summary(summaries: dict[str, TableSummary]) -> str:
    """A table a person reads: rows in, kept, quarantined, and the reasons."""
    from crops_ray.report.markdown import rows_table

    rows = [
        {
            "table": table,
            "rows in": f"{s.rows_in:,}",
            "kept": f"{s.kept:,}",
            "quarantined": f"{s.quarantined:,}",
            "reasons": ", ".join(f"{k}: {v}" for k, v in s.reasons.items()) or "-",
        }
        for table, s in summaries.items()
    ]
    return rows_table(rows, text=True, align=["left", "right", "right", "right", "left"])


def load_validation_config(path: str | None, overrides: dict | None = None, sets=()) -> ValidationConfig:
    return load_config(ValidationConfig, path, overrides, sets)
