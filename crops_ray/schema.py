"""The data contract: the arrow schemas of the logs every pipeline reads, and how to find their files.

A log folder holds three tables, each a folder of parquet shards or a single ``NAME.parquet`` file:

- ``videos``: the corpus the document tower encodes.
- ``search_log``: one row per (search request, candidate video) with the stage the candidate reached.
- ``rec_log``: recommendation-feed interactions.

and, optionally, ``eval/`` with ``ct.parquet``, ``qr.parquet`` and ``qrels.parquet`` (ground truth kept apart
from the logs). Users whose logs spell columns or stages otherwise map them with :class:`LogColumns`.
"""

from __future__ import annotations

from dataclasses import field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from crops_ray.config import config
from crops_ray.sources import Source, by_tie_rank

TABLES = ("videos", "search_log", "rec_log")

# Stages a candidate reaches in the search funnel, best first (the log's sources). HLA turns them into levels.
STAGES = tuple(s.value for s in Source if s.is_stage)

VIDEOS_SCHEMA = pa.schema([("video_id", pa.string()), ("text", pa.string())])

SEARCH_LOG_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("user_id", pa.string()),
        ("query", pa.string()),
        ("ts", pa.int64()),  # unix seconds
        ("video_id", pa.string()),
        ("stage", pa.string()),
    ]
)

REC_LOG_SCHEMA = pa.schema(
    [("user_id", pa.string()), ("video_id", pa.string()), ("ts", pa.int64()), ("action", pa.string())]
)
REC_LOG_OPTIONAL = ("action",)

SCHEMAS = {"videos": VIDEOS_SCHEMA, "search_log": SEARCH_LOG_SCHEMA, "rec_log": REC_LOG_SCHEMA}
OPTIONAL_COLUMNS = {"videos": (), "search_log": (), "rec_log": REC_LOG_OPTIONAL}

# Ground truth (eval/): kept apart from the logs; the logs cover only the training period.
QRELS_SCHEMA = pa.schema([("query", pa.string()), ("video_id", pa.string()), ("grade", pa.int8())])
CT_SCHEMA = pa.schema([("query", pa.string()), ("video_id", pa.string())])
QR_SCHEMA = pa.schema([("query", pa.string()), ("video_id", pa.string())])
EVAL_SCHEMAS = {"qrels": QRELS_SCHEMA, "ct": CT_SCHEMA, "qr": QR_SCHEMA}

# Labelled training samples (the data engine's output, HLA levels): one row per (query, candidate).
# The three cross-perspective sources, by the engine's names for them (--sources p1,p2,p3).
PERSPECTIVES = {f"p{s.perspective}": s.value for s in Source if not s.is_stage}
# Every sample source, in the order of HLA's tie rule (crops_ray.sources.Source.tie_rank: the log first).
SAMPLE_SOURCES = tuple(s.value for s in by_tie_rank())
SAMPLES_SCHEMA = pa.schema(
    [
        ("query", pa.string()),
        ("video_id", pa.string()),  # a fresh id for synthetic (LLM) documents
        ("text", pa.string()),
        ("level", pa.int8()),  # HLA level 0-5
        ("source", pa.string()),  # one of SAMPLE_SOURCES
        ("score", pa.float32()),  # the discriminator's calibrated theta where computed, else null
    ]
)

QUARANTINE_REASON = "reason"


class LogSchemaError(ValueError):
    """A whole input file or table breaks the contract (not parquet, a required column missing, no files)."""


@config
class LogColumns:
    """How a user's logs spell the contract's columns and stages.

    ``columns`` maps a contract column name to the name in the user's files, for every table, e.g.
    ``{"query": "search_text"}``. ``tables`` does the same for one table, over ``columns``: search and feed logs
    come from different teams, e.g. ``{"search_log": {"ts": "event_time"}, "rec_log": {"ts": "ts_ms"}}``.
    ``stages`` maps a value found in the user's ``stage`` column to a contract stage, e.g.
    ``{"click": "clicked", "impression": "exposed"}``; contract names are always accepted as themselves.
    """

    columns: dict[str, str] = field(default_factory=dict)
    stages: dict[str, str] = field(default_factory=dict)
    tables: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = {name for schema in SCHEMAS.values() for name in schema.names}
        unknown = sorted(set(self.columns) - known)
        if unknown:
            raise ValueError(f"LogColumns.columns maps unknown contract columns {unknown}; known: {sorted(known)}")
        if set(self.tables) - set(SCHEMAS):
            raise ValueError(
                f"LogColumns.tables names unknown tables {sorted(set(self.tables) - set(SCHEMAS))}; "
                f"known: {list(SCHEMAS)}"
            )
        for table, mapping in self.tables.items():
            unknown = sorted(set(mapping) - set(SCHEMAS[table].names))
            if unknown:
                raise ValueError(
                    f"LogColumns.tables.{table} maps columns {unknown} that table '{table}' does not have; "
                    f"it has {SCHEMAS[table].names}"
                )
        bad = sorted({v for v in self.stages.values() if v not in STAGES})
        if bad:
            raise ValueError(f"LogColumns.stages maps to unknown stages {bad}; contract stages are {list(STAGES)}")

    def source_name(self, column: str, table: str | None = None) -> str:
        """The name of contract ``column`` in the user's files of ``table``: its table's map, then the global one."""
        own = self.tables.get(table, {}) if table else {}
        return own.get(column, self.columns.get(column, column))

    def stage_map(self) -> dict[str, str]:
        mapping = {stage: stage for stage in STAGES}
        mapping.update(self.stages)
        return mapping


def filesystem_and_path(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem for a local path or any URI pyarrow reads (s3://, gs://, hdfs://, file://)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), uri


def table_files(root: str, table: str) -> list[str]:
    """The data files of ``table`` under a log folder: ``root/table/`` (shards) or ``root/table.parquet``.

    Hidden and underscore files (``_SUCCESS``, ``.crc``) are skipped; every other file must be parquet.
    Returned paths carry the URI scheme of ``root`` so Ray Data and pyarrow can open them.
    """
    fs, base = filesystem_and_path(root.rstrip("/"))
    prefix = root.split("://", 1)[0] + "://" if "://" in root else ""
    folder, single = f"{base}/{table}", f"{base}/{table}.parquet"
    info_folder, info_single = fs.get_file_info([folder, single])
    if info_folder.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True))
        files = sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.File
            and not any(p.startswith((".", "_")) for p in i.path[len(folder) :].split("/") if p)
        )
        if not files:
            raise LogSchemaError(f"{root}: table '{table}' folder {folder} holds no data files")
    elif info_single.type == pafs.FileType.File:
        files = [single]
    else:
        raise LogSchemaError(f"{root}: table '{table}' not found (expected {folder}/ or {single})")
    return [prefix + f for f in files]


def is_nested(typ: pa.DataType) -> bool:
    """Lists, structs, maps and unions (also dictionary-encoded): values a log column cannot hold."""
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    return pa.types.is_nested(typ) or pa.types.is_union(typ)


def check_file_schemas(files: list[str], table: str, columns: LogColumns) -> pa.Schema:
    """Fail fast on a file that is not parquet or lacks a required column; return the first file's schema."""
    required = [n for n in SCHEMAS[table].names if n not in OPTIONAL_COLUMNS[table]]
    sources = {columns.source_name(n, table): n for n in SCHEMAS[table].names}
    first: pa.Schema | None = None
    for path in files:
        fs, p = filesystem_and_path(path)
        try:
            schema = pq.read_schema(p, filesystem=fs)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for non-parquet bytes
            raise LogSchemaError(f"{path}: not a readable parquet file ({exc})") from exc
        for column in required:
            name = columns.source_name(column, table)
            if name not in schema.names:
                hint = f" (mapped from '{column}')" if name != column else ""
                raise LogSchemaError(
                    f"{path}: required column '{name}'{hint} of table '{table}' is missing; file has {schema.names}"
                )
        for col in schema:
            if col.name in sources and is_nested(col.type):
                raise LogSchemaError(
                    f"{path}: column '{col.name}' of table '{table}' is a {col.type}; the contract's "
                    f"'{sources[col.name]}' is a single value per row (a "
                    f"string{' or a number' if sources[col.name] == 'ts' else ''})"
                )
            if col.name in SCHEMAS[table].names and col.name not in sources:
                raise LogSchemaError(
                    f"{path}: column '{col.name}' collides with the contract column that is mapped from "
                    f"'{columns.source_name(col.name, table)}'; rename or drop one of them"
                )
        first = first or schema
    assert first is not None
    return first


def count_rows(files: list[str]) -> int:
    """Rows in parquet files, from their footers (no data read)."""
    total = 0
    for path in files:
        fs, p = filesystem_and_path(path)
        with fs.open_input_file(p) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total
