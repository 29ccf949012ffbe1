"""What the engine reads: the validated logs' ``validation.json``, each table's files and row counts, the shuffle
sizes they give (:class:`Run`, shared by every stage), and the ``--validate`` stage that produces them from raw
logs first."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable

from crops_ray import schema as S
from crops_ray.engine.config import EngineConfig, EngineInputError
from crops_ray.engine.io import Clock
from crops_ray.layout import VALIDATION_JSON


def _partitions(cfg: EngineConfig, rows: int) -> int:
    return cfg.shuffle_partitions or max(2, min(1024, -(-rows // cfg.rows_per_partition)))


def _buckets(cfg: EngineConfig, rows: int, partitions: int) -> int:
    return max(partitions, -(-rows // cfg.rows_per_bucket))


def _validated_files(logs: str, table: str, validation: dict) -> list[str]:
    """A validated table's files; a table validation kept no rows of may have no folder at all."""
    try:
        return S.table_files(logs, table)
    except S.LogSchemaError:
        if validation.get("tables", {}).get(table, {}).get("kept", None) == 0:
            return []
        raise


def check_logs(logs: str) -> dict:
    if not os.path.exists(f"{logs}/{VALIDATION_JSON}"):
        raise EngineInputError(
            f"{logs} holds no validation.json: build_data reads VALIDATED logs. Run `python pipelines/validate.py "
            f"--logs {logs} --out VALIDATED` first, or pass --validate to validate into OUT/validated."
        )
    with open(f"{logs}/{VALIDATION_JSON}") as f:
        return json.load(f)


@dataclass
class Run:
    """What the stages of one run share: the settings, the staging folder, the validated tables and the shuffle
    sizes, the clock and the progress callback."""

    cfg: EngineConfig
    staging: str
    logs: str
    files: dict[str, list[str]]
    rows_in: dict[str, int]
    quarantined: dict[str, int]
    partitions: int
    buckets: int
    clock: Clock
    progress: Callable

    @property
    def work(self) -> str:  # intermediate parquet, removed at the end unless keep_work
        return f"{self.staging}/_work"

    def indented(self, message: str) -> None:
        self.progress("      " + message)


def read_inputs(logs: str, staging: str, cfg: EngineConfig, clock: Clock, progress) -> Run:
    """The validated tables' files and row counts (both search and videos must have rows) and the shuffle sizes."""
    validation = check_logs(logs)
    files = {t: _validated_files(logs, t, validation) for t in S.TABLES}
    rows_in = {t: S.count_rows(f) for t, f in files.items()}
    for table in ("videos", "search_log"):
        if not rows_in[table]:
            raise EngineInputError(f"{logs}: the validated '{table}' table has no rows; there is nothing to label")
    quarantined = {t: v.get("quarantined", 0) for t, v in validation.get("tables", {}).items()}
    partitions = _partitions(cfg, rows_in["search_log"] + rows_in["rec_log"])
    buckets = _buckets(cfg, rows_in["search_log"] + rows_in["rec_log"], partitions)
    progress(
        f"logs {logs}: "
        + ", ".join(f"{t} {n:,} rows" for t, n in rows_in.items())
        + f"; sources {','.join(cfg.sources) or 'none (P0 only)'}; alpha {cfg.alpha}; {partitions} shuffle partitions"
    )
    return Run(cfg, staging, logs, files, rows_in, quarantined, partitions, buckets, clock, progress)


def validate_stage(logs: str, staging: str, eval_dir: str | None, clock: Clock, progress) -> tuple[str, str | None]:
    """``--validate``: the raw logs -> ``OUT/validated`` (and their ``eval/`` as the ground truth, if any)."""
    from crops_ray.validate import validate_logs

    if eval_dir is None and os.path.isdir(f"{logs}/eval"):
        eval_dir = f"{logs}/eval"
    with clock.stage("validate", f"validating {logs} -> {staging}/validated"):
        validate_logs(logs, f"{staging}/validated", progress=lambda m: progress("      " + m))
    return f"{staging}/validated", eval_dir
