"""Log validation: every row either passes into the validated logs or lands in quarantine with a reason.

Runs as a Ray Data stage. Whole-file problems (not parquet, a required column missing) fail fast before any
row is read. Row problems never fail the job: the row goes to ``OUT/quarantine/<table>/`` with a ``reason``
column and a ``raw`` column holding the original values, and the summary checks rows in = kept + quarantined.

Reasons, checked in this order (a row gets the first that applies):
``missing_<column>`` (null or blank), ``undecodable_<column>`` (bytes that are not UTF-8),
``invalid_ts`` (not a number or timestamp), ``empty_query``, ``ts_out_of_range``, ``unknown_stage``,
``unknown_video_id`` (not in the validated ``videos``), ``duplicate_video_id`` (videos: a later copy of an id).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crops_ray import schema as S
from crops_ray import storage
from crops_ray.config import load_config

RAW_COLUMN = "raw"


@dataclass
class ValidationConfig:
    columns: S.LogColumns = field(default_factory=S.LogColumns)
    ts_min: int = 946_684_800  # 2000-01-01: earlier timestamps are clock or unit errors
    ts_max: int = 4_102_444_800  # 2100-01-01: milliseconds mistaken for seconds land far beyond this
    rows_per_shard: int = 200_000  # output shard size for the videos table, written by the driver
    batch_size: int = 8192
    # Ray Data actor pool of checkers; 0.5 CPU each so 2 of them leave a CPU for read and write tasks on 2 cores.
    checker_num_cpus: float = 0.5
    checker_pool_max: int = 2


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


def _to_utf8(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Cast to string; return the array and a mask of values that were present but not valid UTF-8."""
    n = len(arr)
    bad = np.zeros(n, dtype=bool)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        try:
            arr.validate(full=True)
            return arr.cast(pa.string()), bad
        except pa.ArrowInvalid:
            arr = arr.cast(pa.binary()) if pa.types.is_string(arr.type) else arr.cast(pa.large_binary())
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        try:
            return pc.cast(arr, pa.string()), bad
        except pa.ArrowInvalid:
            return _convert_each(arr, lambda v: v.decode("utf-8"), pa.string(), (UnicodeDecodeError,))
    # Integer or other scalar ids are accepted and spelled as strings.
    return pc.cast(arr, pa.string()), bad


def _to_seconds(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Cast ``ts`` to int64 unix seconds; arrow timestamps and digit strings are converted."""
    n = len(arr)
    bad = np.zeros(n, dtype=bool)
    if pa.types.is_timestamp(arr.type):
        seconds = pc.cast(arr, pa.timestamp("s", tz=arr.type.tz), safe=False)
        return seconds.cast(pa.int64()), bad
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_integer(arr.type):
        try:
            return arr.cast(pa.int64()), bad
        except pa.ArrowInvalid:  # uint64 beyond int64: those values are bad, the rest convert
            pass

    def seconds(v) -> int:
        f = float(v.decode() if isinstance(v, bytes) else v)
        if not np.isfinite(f) or f != int(f):
            raise ValueError(v)
        if not -(2**63) <= int(f) < 2**63:
            raise OverflowError(v)
        return int(f)

    return _convert_each(arr, seconds, pa.int64(), (ValueError, TypeError, OverflowError, UnicodeDecodeError))


def _convert_each(arr: pa.Array, convert, typ: pa.DataType, errors: tuple) -> tuple[pa.Array, np.ndarray]:
    """Convert value by value (the slow path, only for arrays with bad values); failures become null and flagged."""
    bad = np.zeros(len(arr), dtype=bool)
    values = []
    for i, v in enumerate(arr.to_pylist()):
        if v is None:
            values.append(None)
            continue
        try:
            values.append(convert(v))
        except errors:
            values.append(None)
            bad[i] = True
    return pa.array(values, type=typ), bad


def _python_values(arr) -> list:
    """Values as Python objects; temporal values Python cannot hold (a year past 9999) as their stored integers."""
    try:
        return arr.to_pylist()
    except (OverflowError, ValueError):
        if pa.types.is_temporal(arr.type):
            return arr.cast(pa.int64()).to_pylist()
        return [None if not v.is_valid else str(v) for v in arr]


def _raw_json(batch: pa.Table, names: list[str], rows: np.ndarray) -> list[str]:
    """The original values of the quarantined rows, as JSON, so nothing is lost."""
    cols = {n: _python_values(batch.column(n).take(pa.array(rows))) for n in names}
    out = []
    for i in range(len(rows)):
        record = {
            n: (v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v)
            for n, v in ((n, cols[n][i]) for n in names)
        }
        out.append(json.dumps(record, default=str, ensure_ascii=False))
    return out


def check_batch(
    batch: pa.Table,
    table: str,
    cfg: ValidationConfig,
    video_ids: pa.Array | None = None,
) -> pa.Table:
    """Canonical columns (renamed, cast), the extra columns, ``reason`` (null when the row is good) and ``raw``."""
    target = S.SCHEMAS[table]
    n = batch.num_rows
    for name in target.names:
        src = cfg.columns.source_name(name)
        if src in batch.column_names and S.is_nested(batch.schema.field(src).type):
            raise S.LogSchemaError(
                f"column '{src}' of table '{table}' is a {batch.schema.field(src).type}, not a single value per row"
            )
    reason = np.full(n, None, dtype=object)

    def flag(mask: np.ndarray, why: str) -> None:
        reason[(reason == None) & mask] = why  # noqa: E711 (element-wise on an object array)

    sources = {name: cfg.columns.source_name(name) for name in target.names}
    canonical: dict[str, pa.Array] = {}
    for name in target.names:
        typ = target.field(name).type
        src = sources[name]
        if src not in batch.column_names:  # optional column absent from this file
            canonical[name] = pa.nulls(n, typ)
            continue
        arr = batch.column(src).combine_chunks()
        arr, bad = _to_seconds(arr) if name == "ts" else _to_utf8(arr)
        null = arr.is_null().to_numpy(zero_copy_only=False) & ~bad
        blank = np.zeros(n, dtype=bool)
        if pa.types.is_string(typ):
            blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(arr), ""), False).to_numpy(zero_copy_only=False)
        if name not in S.OPTIONAL_COLUMNS[table]:
            flag(null, f"missing_{name}")
            flag(blank, "empty_query" if name == "query" else f"missing_{name}")
        flag(bad, "invalid_ts" if name == "ts" else f"undecodable_{name}")
        canonical[name] = arr

    if "ts" in canonical:
        ts = canonical["ts"]
        out_of_range = pc.or_(pc.less(ts, cfg.ts_min), pc.greater(ts, cfg.ts_max))
        flag(pc.fill_null(out_of_range, False).to_numpy(zero_copy_only=False), "ts_out_of_range")
    if "stage" in canonical:
        mapping = cfg.columns.stage_map()
        keys = pa.array(list(mapping), type=pa.string())
        idx = pc.index_in(canonical["stage"], value_set=keys)
        flag(idx.is_null().to_numpy(zero_copy_only=False), "unknown_stage")
        values = pa.array(list(mapping.values()), type=pa.string())
        canonical["stage"] = pc.take(values, idx)
    if video_ids is not None and table != "videos":
        known = pc.is_in(canonical["video_id"], value_set=video_ids)
        flag(~pc.fill_null(known, False).to_numpy(zero_copy_only=False), "unknown_video_id")

    extras = [
        c for c in batch.column_names if c not in set(sources.values()) and c not in (S.QUARANTINE_REASON, RAW_COLUMN)
    ]
    columns = {name: canonical[name] for name in target.names}
    columns.update({c: batch.column(c) for c in extras})
    columns[S.QUARANTINE_REASON] = pa.array(reason.tolist(), type=pa.string())
    bad_rows = np.flatnonzero(reason != None)  # noqa: E711
    raw = np.full(n, None, dtype=object)
    if len(bad_rows):
        present = [sources[name] for name in target.names if sources[name] in batch.column_names]
        raw[bad_rows] = _raw_json(batch, present, bad_rows)
    columns[RAW_COLUMN] = pa.array(raw.tolist(), type=pa.string())
    return pa.table(columns)


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
        reason = batch[S.QUARANTINE_REASON].to_pylist()
        ids = batch["video_id"].to_pylist()
        dup_rows = []
        for i, (vid, why) in enumerate(zip(ids, reason)):
            if why is None:
                if vid in seen:
                    reason[i] = "duplicate_video_id"
                    dup_rows.append(i)
                else:
                    seen.add(vid)
                    kept_ids.append(vid)
        if dup_rows:
            raw = batch[RAW_COLUMN].to_pylist()
            for i, text in zip(dup_rows, _raw_json(batch, ["video_id", "text"], np.array(dup_rows))):
                raw[i] = text
            batch = batch.set_column(
                batch.schema.get_field_index(S.QUARANTINE_REASON), S.QUARANTINE_REASON, pa.array(reason, pa.string())
            )
            batch = batch.set_column(batch.schema.get_field_index(RAW_COLUMN), RAW_COLUMN, pa.array(raw, pa.string()))
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

    checked = ray.data.read_parquet(files).map_batches(
        BatchChecker,
        fn_constructor_args=(table, cfg, ray.put(video_ids)),
        batch_format="pyarrow",
        batch_size=cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.checker_pool_max),
        num_cpus=cfg.checker_num_cpus,
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
        storage.write_bytes(f"{staging}/validation.json", json.dumps(report, indent=2).encode())
    return summaries


def format_summary(summaries: dict[str, TableSummary]) -> str:
    """A table a person reads: rows in, kept, quarantined, and the reasons."""
    lines = ["| table | rows in | kept | quarantined | reasons |", "|---|---:|---:|---:|---|"]
    for table, s in summaries.items():
        reasons = ", ".join(f"{k}: {v}" for k, v in s.reasons.items()) or "-"
        lines.append(f"| {table} | {s.rows_in:,} | {s.kept:,} | {s.quarantined:,} | {reasons} |")
    return "\n".join(lines)


def load_validation_config(path: str | None, overrides: dict | None = None, sets=()) -> ValidationConfig:
    return load_config(ValidationConfig, path, overrides, sets)
