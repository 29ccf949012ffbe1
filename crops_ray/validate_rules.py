"""Log validation's row rules: one batch of a table -> its canonical columns plus ``reason`` (null when the row
is good) and ``raw`` (the original values of a bad row). Pure pyarrow; the Ray Data job that runs them is
:mod:`crops_ray.validate`.

Reasons, checked in this order (a row gets the first that applies):
``missing_<column>`` (null or blank), ``undecodable_<column>`` (bytes that are not UTF-8, in a binary or a string
column), ``invalid_ts`` (not a whole number of seconds or a timestamp: a date or a duration is not one),
``empty_query``, ``ts_out_of_range``, ``unknown_stage``, ``unknown_video_id`` (not in the validated ``videos``),
``duplicate_video_id`` (videos: a later copy of an id).

A row problem never raises: whatever a string or bytes column holds, the row is kept or quarantined, and ``raw`` is
strict JSON with bytes that are not UTF-8 shown escaped (``\\xff``).
"""

from __future__ import annotations

import json
from dataclasses import field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crops_ray import schema as S
from crops_ray.config import config

RAW_COLUMN = "raw"


@config
class ValidationConfig:
    columns: S.LogColumns = field(default_factory=S.LogColumns)
    ts_min: int = 946_684_800  # 2000-01-01: earlier timestamps are clock or unit errors
    ts_max: int = 4_102_444_800  # 2100-01-01: milliseconds mistaken for seconds land far beyond this
    rows_per_shard: int = 200_000  # output shard size for the videos table, written by the driver
    batch_size: int = 8192
    # Ray Data actor pool of checkers; 0.5 CPU each so 2 of them leave a CPU for read and write tasks on 2 cores.
    checker_num_cpus: float = 0.5
    checker_pool_max: int = 2


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
            pass
    arr = _as_bytes(arr)
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        try:
            return pc.cast(arr, pa.string()), bad
        except pa.ArrowInvalid:
            return _convert_each(arr, lambda v: v.decode("utf-8"), pa.string(), (UnicodeDecodeError,))
    # Integer or other scalar ids are accepted and spelled as strings (Python's spelling where arrow has none).
    try:
        return pc.cast(arr, pa.string()), bad
    except pa.ArrowNotImplementedError:
        return _convert_each(arr, str, pa.string(), ())


def _to_seconds(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Cast ``ts`` to int64 unix seconds; arrow timestamps and digit strings are converted."""
    n = len(arr)
    bad = np.zeros(n, dtype=bool)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_timestamp(arr.type):
        seconds = pc.cast(arr, pa.timestamp("s", tz=arr.type.tz), safe=False)
        return seconds.cast(pa.int64()), bad
    if pa.types.is_temporal(arr.type):  # a date, time of day, duration or interval is not a moment in seconds
        return pa.nulls(n, pa.int64()), arr.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_integer(arr.type):
        try:
            return arr.cast(pa.int64()), bad
        except pa.ArrowInvalid:  # uint64 beyond int64: those values are bad, the rest convert
            pass
    arr = _as_bytes(arr)  # digit strings are parsed from bytes: invalid UTF-8 is an invalid_ts, not a crash

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


def _as_bytes(arr: pa.Array) -> pa.Array:
    """A text or bytes column as plain binary (no UTF-8 check), so values that are not valid UTF-8 come out as bytes
    rather than raise, and the view and fixed-size layouts (which some kernels lack) as the plain one."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_large_string(arr.type):
        return arr.cast(pa.large_binary())
    if (
        pa.types.is_string(arr.type)
        or pa.types.is_string_view(arr.type)
        or pa.types.is_binary_view(arr.type)
        or pa.types.is_fixed_size_binary(arr.type)
    ):
        return arr.cast(pa.binary())
    return arr


def _kernel_layout(arr):
    """An extra column carried as it is, but with view layouts as the plain ones (filters have no view kernels)."""
    if pa.types.is_string_view(arr.type):
        return arr.cast(pa.string())
    if pa.types.is_binary_view(arr.type):
        return arr.cast(pa.binary())
    return arr


def _python_values(arr) -> list:
    """Values as Python objects: text as bytes (a broken producer's invalid UTF-8 must not stop validation),
    temporal values Python cannot hold (a year past 9999) as their stored integers."""
    arr = _as_bytes(arr)
    try:
        return arr.to_pylist()
    except (OverflowError, ValueError):
        if pa.types.is_temporal(arr.type) and arr.type.bit_width in (32, 64):
            return arr.view(pa.int32() if arr.type.bit_width == 32 else pa.int64()).to_pylist()
        return [None if not v.is_valid else str(v) for v in arr]


def _json_value(v):
    """One original value as strict JSON holds it: bytes that are not UTF-8 shown escaped (``\\xff``), NaN and
    infinities as their names (strict JSON readers refuse the bare ``NaN`` Python would write)."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    return v


def raw_json(batch: pa.Table, names: list[str], rows: np.ndarray) -> list[str]:
    """The original values of the quarantined rows, as JSON, so nothing is lost."""
    cols = {n: _python_values(_as_bytes(batch.column(n).combine_chunks()).take(pa.array(rows))) for n in names}
    out = []
    for i in range(len(rows)):
        record = {n: _json_value(cols[n][i]) for n in names}
        out.append(json.dumps(record, default=str, ensure_ascii=False, allow_nan=False))
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
        src = cfg.columns.source_name(name, table)
        if src in batch.column_names and S.is_nested(batch.schema.field(src).type):
            raise S.LogSchemaError(
                f"column '{src}' of table '{table}' is a {batch.schema.field(src).type}, not a single value per row"
            )
    reason = np.full(n, None, dtype=object)

    def flag(mask: np.ndarray, why: str) -> None:
        reason[(reason == None) & mask] = why  # noqa: E711 (element-wise on an object array)

    sources = {name: cfg.columns.source_name(name, table) for name in target.names}
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
    columns.update({c: _kernel_layout(batch.column(c)) for c in extras})
    columns[S.QUARANTINE_REASON] = pa.array(reason.tolist(), type=pa.string())
    bad_rows = np.flatnonzero(reason != None)  # noqa: E711
    raw = np.full(n, None, dtype=object)
    if len(bad_rows):
        present = [sources[name] for name in target.names if sources[name] in batch.column_names]
        raw[bad_rows] = raw_json(batch, present, bad_rows)
    columns[RAW_COLUMN] = pa.array(raw.tolist(), type=pa.string())
    return pa.table(columns)


def quarantine_later_copies(batch: pa.Table, seen: set[str]) -> tuple[pa.Table, list[str]]:
    """Videos, after :func:`check_batch`, in file order: a good row whose id is in ``seen`` (an earlier row or batch)
    becomes ``duplicate_video_id`` with its raw values. Returns the batch and the ids it keeps, which join ``seen``:
    the first copy of an id wins."""
    reason = batch[S.QUARANTINE_REASON].to_pylist()
    kept, later = [], []
    for i, (vid, why) in enumerate(zip(batch["video_id"].to_pylist(), reason)):
        if why is not None:
            continue
        if vid in seen:
            reason[i] = "duplicate_video_id"
            later.append(i)
        else:
            seen.add(vid)
            kept.append(vid)
    if not later:
        return batch, kept
    raw = batch[RAW_COLUMN].to_pylist()
    for i, text in zip(later, raw_json(batch, ["video_id", "text"], np.array(later))):
        raw[i] = text
    batch = batch.set_column(
        batch.schema.get_field_index(S.QUARANTINE_REASON), S.QUARANTINE_REASON, pa.array(reason, pa.string())
    )
    return batch.set_column(batch.schema.get_field_index(RAW_COLUMN), RAW_COLUMN, pa.array(raw, pa.string())), kept
