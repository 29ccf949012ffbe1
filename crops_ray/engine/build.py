"""The data engine end to end: validated logs -> HLA-labelled training samples (``pipelines/build_data.py``).

Steps (each writes parquet, so a large run never holds its data in the object store, and each is timed):

1. ``users``: P1 and P2 candidates, one shuffle of the logs by user (:mod:`crops_ray.engine.users`).
2. ``pairs``: log rows (P0), candidates and videos, one shuffle by video -> one row per (query, video) with
   its text (:func:`crops_ray.engine.assemble.collapse_videos`). Both shuffles key on hash buckets of the
   user/video id (``rows_per_bucket``), so the per-group functions run vectorised over many users/videos.
3. ``score``: the discriminator over the pairs P1/P2 proposed -> ``OUT/candidates/`` (every pair, its
   sources, theta, and which mined candidates were kept).
4. ``llm_generate`` and ``llm_verify``: P3 on the most clicked queries -> ``OUT/llm_descriptions/`` (every
   description with the quality-control reason that dropped it, if any).
5. ``assemble``: the highest level per (query, video), plus the P3 documents -> ``OUT/samples/``
   (``schema.SAMPLES_SCHEMA``), and ``OUT/stats.json``.

``OUT`` is replaced atomically: everything is written to a staging folder that takes its place at the end.
Ray workers write there directly, so on a multi-node cluster ``OUT`` must be a shared mount (NFS and the
like); object stores (s3://) have no atomic rename and are not supported as ``OUT``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crops_ray import schema as S
from crops_ray import storage
from crops_ray.discriminator import (
    Calibration,
    DiscriminatorConfig,
    calibrated_weights,
    load_or_fit_calibration,
    score_dataset,
)
from crops_ray.engine import assemble as A
from crops_ray.engine import world_knowledge as W
from crops_ray.engine.recommendation import RecommendationConfig
from crops_ray.engine.reformulation import ReformulationConfig
from crops_ray.engine.world_knowledge import WorldKnowledgeConfig
from crops_ray.hla import LevelConfig

SOURCES = tuple(S.PERSPECTIVES)  # p1 reformulation, p2 recommendation, p3 LLM world knowledge


def _paper_levels() -> dict[str, int]:
    return dict(LevelConfig().levels)


@dataclass
class EngineConfig:
    sources: tuple = SOURCES  # perspectives switched on (ablations): any of p1, p2, p3
    alpha: float = 0.6  # keep a mined candidate when theta(q, d) > alpha
    levels: dict = field(default_factory=_paper_levels)  # HLA level per sample source
    # Fine-tuned on the labelled pairs (the embedded world's, or labelled_pairs) before calibration: a zero-shot
    # bi-encoder cannot tell a query's subtopic from its topic (measured: precision 0.56 vs 0.82 on the small
    # world's mined pairs at grade >= 2), and a kept candidate becomes a positive on par with a click.
    discriminator: DiscriminatorConfig = field(default_factory=lambda: DiscriminatorConfig(fine_tune=True))
    reformulation: ReformulationConfig = field(default_factory=ReformulationConfig)
    recommendation: RecommendationConfig = field(default_factory=RecommendationConfig)
    # A user with more rows than this (search_log + rec_log) is left out of P1/P2 mining and counted (a crawler
    # or a shared account; see crops_ray.engine.users); 0 turns the cap off.
    max_user_rows: int = 1_000_000
    world_knowledge: WorldKnowledgeConfig = field(default_factory=WorldKnowledgeConfig)
    shuffle_partitions: int = 0  # 0: one partition per rows_per_partition input rows, at least 2
    rows_per_partition: int = 250_000
    rows_per_bucket: int = 20_000  # shuffle keys are hash buckets of users/videos holding about this many rows
    map_num_cpus: float = 0.5  # CPUs per map/groupby task (leaves room for reads and writes on 2 cores)
    # Ray Data shuffle for the groupbys. The sort-based shuffle runs as plain tasks (about 1 s per groupby on a
    # small machine); "hash_shuffle" starts aggregator actors per groupby (~10 s each here), which pays off on
    # large clusters.
    shuffle_strategy: str = "sort_shuffle_pull_based"
    keep_work: bool = False  # keep OUT/_work/ (intermediate parquet) for inspection

    def __post_init__(self) -> None:
        if isinstance(self.sources, str):
            self.sources = tuple(s.strip() for s in self.sources.split(",") if s.strip())
        self.sources = tuple(self.sources)
        unknown = sorted(set(self.sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown sources {unknown}; choose from {list(SOURCES)} (comma-separated)")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        LevelConfig(dict(self.levels))  # validates the level map
        from ray.data.context import ShuffleStrategy

        ShuffleStrategy(self.shuffle_strategy)  # raises on an unknown strategy
        if self.max_user_rows < 0:
            raise ValueError(f"max_user_rows must be >= 0 (0 turns the cap off), got {self.max_user_rows}")
        if self.rows_per_partition < 1 or self.rows_per_bucket < 1 or self.shuffle_partitions < 0:
            raise ValueError("shuffle_partitions must be >= 0, rows_per_partition and rows_per_bucket >= 1")


def label_settings(cfg: EngineConfig) -> dict:
    """:func:`assemble.label_candidates`' keyword arguments for ``cfg``: alpha and the reformulation gate (no gate
    without P1). One rule for the engine and for anything that relabels its candidates (the alpha sweep)."""
    gate = cfg.reformulation.gate if "p1" in cfg.sources else "none"
    return {"alpha": cfg.alpha, "gate": gate, "gate_threshold": cfg.reformulation.gate_threshold}


class EngineInputError(ValueError):
    """The input folder is not what build_data reads (with a message saying what to do)."""


# ---------------------------------------------------------------------------------------------- helpers


class _Clock:
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


def _read(folder_or_files, columns=None):
    import ray.data

    files = storage.parquet_files(folder_or_files) if isinstance(folder_or_files, str) else folder_or_files
    if not files:
        return None
    ds = ray.data.read_parquet(files)
    return ds.select_columns(columns) if columns else ds  # Ray Data pushes the projection into the read


def _write(ds, folder: str, schema: pa.Schema) -> int:
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


def _sum_counts(folder: str, fn, columns: list[str], **kwargs) -> dict[str, int]:
    """Counters computed by ``fn`` (one-row tables) over a parquet folder, streamed on the driver.

    Only the named columns are read, batch by batch, so this stays light on large outputs, and it costs no Ray
    job (a Ray Data pass would start tasks just to count).
    """
    import pyarrow.dataset as pads

    total: dict[str, int] = {}
    files = storage.parquet_files(folder)
    if not files:
        return total
    for batch in pads.dataset(files, format="parquet").to_batches(columns=columns):
        counts = fn(pa.Table.from_batches([batch]), **kwargs)
        for name in counts.column_names:
            total[name] = total.get(name, 0) + int(pc.sum(counts[name]).as_py() or 0)
    return total


def _count(mask) -> int:
    return int(pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0)


def candidate_counts(batch: pa.Table) -> pa.Table:
    p1, p2 = pc.fill_null(batch["reformulation"], False), pc.fill_null(batch["recommendation"], False)
    return pa.table(
        {
            "pairs": [batch.num_rows],
            "scored": [_count(batch["needs_score"])],
            "p1_candidates": [_count(p1)],
            "p1_gate_pass": [_count(batch["gate_pass"])],
            "p1_kept": [_count(batch["reformulation_kept"])],
            "p2_candidates": [_count(p2)],
            "p2_kept": [_count(batch["recommendation_kept"])],
            "p0_pairs": [_count(pc.is_valid(batch["log_level"]))],
        }
    )


def sample_counts(batch: pa.Table) -> pa.Table:
    keys = [f"{s}:{lv}" for s, lv in zip(batch["source"].to_pylist(), batch["level"].to_pylist())]
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    return pa.table({k: [v] for k, v in counts.items()})


def llm_samples(batch: pa.Table, level: int) -> pa.Table:
    kept = batch.filter(pc.fill_null(batch["candidate"], False))
    return pa.table(
        {
            "query": kept["query"],
            "video_id": kept["video_id"],
            "text": kept["text"],
            "level": pa.array([level] * kept.num_rows, pa.int8()),
            "source": pa.array(["llm"] * kept.num_rows, pa.string()),
            "score": kept["score"],
        },
        schema=S.SAMPLES_SCHEMA,
    )


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


def _check_logs(logs: str) -> dict:
    if not os.path.exists(f"{logs}/validation.json"):
        raise EngineInputError(
            f"{logs} holds no validation.json: build_data reads VALIDATED logs. Run `python pipelines/validate.py "
            f"--logs {logs} --out VALIDATED` first, or pass --validate to validate into OUT/validated."
        )
    with open(f"{logs}/validation.json") as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------- the engine


def build_data(
    logs: str,
    out: str,
    cfg: EngineConfig | None = None,
    validate: bool = False,
    eval_dir: str | None = None,
    progress=print,
) -> dict:
    """Validated logs -> ``out``/samples/ and ``out``/stats.json (``out`` replaced atomically). Returns the stats."""
    from crops_ray.runtime import init_ray

    cfg = cfg or EngineConfig()
    storage.check_output(out, [logs, eval_dir])  # before anything is read, started or deleted
    if validate:  # whole-file problems fail before anything starts
        for table in S.TABLES:
            S.check_file_schemas(S.table_files(logs, table), table, S.LogColumns())
    else:
        _check_logs(logs)
    started = time.time()
    init_ray()
    import ray.data

    ctx = ray.data.DataContext.get_current()
    previous_strategy = ctx.shuffle_strategy
    ctx.shuffle_strategy = cfg.shuffle_strategy
    try:
        with storage.Output(out, inputs=[logs, eval_dir]) as staging:
            stats = _build(logs, staging, cfg, validate, eval_dir, progress)
            stats["seconds"]["total"] = round(time.time() - started, 2)
            if not cfg.keep_work:
                shutil.rmtree(f"{staging}/_work", ignore_errors=True)
            if stats.get("evaluation") is None and eval_dir is None:
                stats.pop("evaluation", None)
            with open(f"{staging}/stats.json", "w") as f:
                json.dump(stats, f, indent=2, default=str)
    finally:
        ctx.shuffle_strategy = previous_strategy
    return stats


def _build(logs: str, staging: str, cfg: EngineConfig, validate: bool, eval_dir: str | None, progress) -> dict:
    sources = set(cfg.sources)
    clock = _Clock(progress, total=(1 if validate else 0) + 3 + (2 if "p3" in sources else 0) + 1)
    if validate:
        from crops_ray.validate import validate_logs

        if eval_dir is None and os.path.isdir(f"{logs}/eval"):
            eval_dir = f"{logs}/eval"
        with clock.stage("validate", f"validating {logs} -> {staging}/validated"):
            validate_logs(logs, f"{staging}/validated", progress=lambda m: progress("      " + m))
        logs = f"{staging}/validated"
    validation = _check_logs(logs)
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

    calibration = load_or_fit_calibration(cfg.discriminator, cfg.alpha, progress=lambda m: progress("      " + m))
    calibrated_weights(calibration, cfg.discriminator)  # weights that are gone fail here, not inside every actor
    calibration.save(f"{staging}/discriminator_calibration.json")
    work = f"{staging}/_work"
    search_cols = ["request_id", "user_id", "query", "ts", "video_id", "stage"]

    # 1. P1/P2 candidates, one shuffle by user
    p1_cfg = cfg.reformulation if "p1" in sources else None
    p2_cfg = cfg.recommendation if "p2" in sources else None
    user_rows = 0
    heavy: dict[str, int] = {}  # users over max_user_rows, left out of P1/P2 mining: their rows
    with clock.stage("users", "mining reformulation (P1) and recommendation (P2) candidates per user"):
        if p1_cfg or p2_cfg:
            from crops_ray.engine.users import USER_CANDIDATE_SCHEMA, heavy_users, user_candidates

            rec_cols = ["user_id", "video_id", "ts"] + (["action"] if p2_cfg and p2_cfg.actions else [])
            rec = _read(files["rec_log"], rec_cols) if rows_in["rec_log"] and p2_cfg else None
            rec_rows = rows_in["rec_log"] if rec is not None else 0
            if cfg.max_user_rows and max(rows_in["search_log"], rec_rows) > cfg.max_user_rows // 2:
                # no user can pass the cap when neither log holds half as many rows: skip the count
                heavy = heavy_users([_read(files["search_log"], ["user_id"]), rec], cfg.max_user_rows)
            if heavy:
                progress(
                    f"      {len(heavy):,} user(s) over max_user_rows={cfg.max_user_rows:,} left out of P1/P2 mining "
                    f"({sum(heavy.values()):,} rows; the heaviest has {max(heavy.values()):,})"
                )
            ds = user_candidates(
                _read(files["search_log"], search_cols),
                rec,
                p1_cfg,
                p2_cfg if rec is not None else None,
                partitions,
                buckets,
                cfg.map_num_cpus,
                skip_users=heavy,
            )
            user_rows = _write(ds, f"{work}/user_candidates", USER_CANDIDATE_SCHEMA)
    progress(f"      {user_rows:,} candidate rows (before deduplication)")

    # 2. pairs: one row per (query, video) with text, shuffle by video
    with clock.stage("pairs", "collapsing log rows and candidates into (query, video) pairs with text"):
        cands = _read(f"{work}/user_candidates") if user_rows else None
        pairs = A.pairs_dataset(
            _read(files["search_log"], search_cols),
            _read(files["videos"]),
            cands,
            LevelConfig(dict(cfg.levels)),
            partitions,
            buckets,
            cfg.map_num_cpus,
        )
        pair_rows = _write(pairs, f"{work}/pairs", A.PAIR_SCHEMA)
    progress(f"      {pair_rows:,} pairs")

    # 3. the discriminator over the pairs P1/P2 proposed
    labels = label_settings(cfg)
    gate = labels["gate"]
    with clock.stage(
        "score",
        f"scoring mined pairs with the discriminator ({cfg.discriminator.kind}, "
        f"{os.path.basename(calibration.model.rstrip('/'))})",
    ):
        ds = score_dataset(
            _read(f"{work}/pairs"),
            cfg.discriminator,
            calibration,
            rows=pair_rows,
            mask_column="needs_score",
            gate_column="reformulated_queries" if gate == "discriminator" else None,
        )
        ds = ds.map_batches(A.label_candidates, batch_format="pyarrow", fn_kwargs=labels, num_cpus=cfg.map_num_cpus)
        _write(ds, f"{staging}/candidates", A.CANDIDATES_SCHEMA)
    counts = _sum_counts(
        f"{staging}/candidates",
        candidate_counts,
        [
            "score",
            "reformulation",
            "recommendation",
            "needs_score",
            "gate_pass",
            "reformulation_kept",
            "recommendation_kept",
            "log_level",
        ],
    )
    progress(
        f"      scored {counts.get('scored', 0):,} pairs; kept P1 {counts.get('p1_kept', 0):,} of "
        f"{counts.get('p1_candidates', 0):,}, P2 {counts.get('p2_kept', 0):,} of {counts.get('p2_candidates', 0):,}"
    )

    # 4. P3 world knowledge
    llm = {
        "prompts": 0,
        "queries": 0,
        "prompt_tokens": 0,
        "generated_tokens": 0,
        "descriptions": 0,
        "removed": {},
        "kept": 0,
        "scored": 0,
    }
    if "p3" in sources:
        llm = _world_knowledge(cfg, calibration, staging, work, partitions, clock, progress)

    # 5. assemble
    with clock.stage("assemble", "assembling HLA samples (highest level per query and video)"):
        samples = _read(f"{staging}/candidates").map_batches(
            A.to_samples, batch_format="pyarrow", fn_kwargs={"levels": dict(cfg.levels)}, num_cpus=cfg.map_num_cpus
        )
        llm_ds = _read(f"{staging}/llm_descriptions") if "p3" in sources else None
        if llm_ds is not None:
            samples = samples.union(
                llm_ds.map_batches(
                    llm_samples,
                    batch_format="pyarrow",
                    fn_kwargs={"level": cfg.levels["llm"]},
                    num_cpus=cfg.map_num_cpus,
                )
            )
        sample_rows = _write(samples, f"{staging}/samples", S.SAMPLES_SCHEMA)
    by_source_level = _sum_counts(f"{staging}/samples", sample_counts, ["source", "level"])

    import ray

    resources = ray.cluster_resources()
    stats = {
        "logs": logs,
        "cluster": {"cpus": resources.get("CPU", 0), "gpus": resources.get("GPU", 0)},
        "config": asdict(cfg),
        "rows_read": rows_in,
        "quarantined": quarantined,
        "pairs": counts.get("pairs", 0),
        "sources": {
            "log": {"pairs": counts.get("p0_pairs", 0)},
            "reformulation": {
                "enabled": "p1" in sources,
                "candidates": counts.get("p1_candidates", 0),
                "gate_removed": counts.get("p1_candidates", 0) - counts.get("p1_gate_pass", 0)
                if gate == "discriminator"
                else 0,
                "below_alpha": counts.get("p1_gate_pass", 0) - counts.get("p1_kept", 0)
                if gate == "discriminator"
                else counts.get("p1_candidates", 0) - counts.get("p1_kept", 0),
                "kept": counts.get("p1_kept", 0),
            },
            "recommendation": {
                "enabled": "p2" in sources,
                "candidates": counts.get("p2_candidates", 0),
                "below_alpha": counts.get("p2_candidates", 0) - counts.get("p2_kept", 0),
                "kept": counts.get("p2_kept", 0),
            },
            "llm": {
                "enabled": "p3" in sources,
                "queries": llm["queries"],
                "candidates": llm["descriptions"],
                "removed": llm["removed"],
                "kept": llm["kept"],
            },
        },
        "user_candidate_rows": user_rows,
        "heavy_users": {"users": len(heavy), "rows": sum(heavy.values()), "max_user_rows": cfg.max_user_rows},
        "discriminator": {
            "pairs_scored": counts.get("scored", 0) + llm["scored"],
            "mined_pairs_scored": counts.get("scored", 0),
            "llm_descriptions_scored": llm["scored"],
            "calibration": asdict(calibration),
        },
        "llm": {
            "backend": cfg.world_knowledge.backend,
            "calls": llm["prompts"],
            "prompt_tokens": llm["prompt_tokens"],
            "generated_tokens": llm["generated_tokens"],
        },
        "samples": {"rows": sample_rows, "by_source_level": dict(sorted(by_source_level.items()))},
        "seconds": clock.seconds,
    }
    from crops_ray.world.audit import evaluate_engine, has_truth

    stats["evaluation"] = (
        evaluate_engine(staging, eval_dir, cfg.alpha, cfg.discriminator.calibration_min_grade)
        if has_truth(eval_dir)
        else None
    )
    return stats


def _world_knowledge(
    cfg: EngineConfig, calibration: Calibration, staging: str, work: str, partitions: int, clock: _Clock, progress
) -> dict:
    import pyarrow.parquet as pq
    import ray.data

    wk = cfg.world_knowledge
    with clock.stage(
        "llm_generate",
        f"P3: prompting the LLM ({wk.backend}, {wk.model}) on up to {wk.max_queries or 'all'} queries x "
        f"{wk.samples_per_query} samples",
    ):
        chosen = W.choose_queries(_examples(f"{staging}/candidates"), wk.max_queries)
        prompts = W.prompt_rows(chosen, wk)
        ds = None
        if prompts:
            per_batch = max(1, wk.batch_size // wk.samples_per_query)
            ds = W.generate(
                ray.data.from_items(prompts, override_num_blocks=max(1, min(-(-len(prompts) // per_batch), 64))),
                wk,
                partitions,
                progress=lambda m: progress("      " + m),
            )
        _write(ds, f"{work}/llm_generated", W.GENERATED_SCHEMA)
    tokens = _sum_counts(f"{work}/llm_generated", _token_counts, ["calls", "prompt_tokens", "generated_tokens"])
    progress(
        f"      {len(chosen)} queries, {tokens.get('calls', 0):,} "
        f"prompts, {tokens.get('generated_tokens', 0):,} tokens generated"
    )

    with clock.stage("llm_verify", "P3: parsing, de-duplicating and verifying descriptions with the discriminator"):
        ds = (
            W.verify(_read(f"{work}/llm_generated"), cfg.discriminator, calibration, cfg.alpha, wk) if prompts else None
        )
        _write(ds, f"{staging}/llm_descriptions", W.DESCRIPTION_SCHEMA)
    table = pq.read_table(storage.parquet_files(f"{staging}/llm_descriptions"), columns=["reason", "score"])
    reasons = W.reason_counts(table["reason"].to_pylist())
    kept = table.num_rows - sum(reasons.values())
    progress(
        f"      {table.num_rows - reasons['empty']:,} descriptions, kept {kept:,}; removed "
        + (", ".join(f"{k} {v}" for k, v in reasons.items() if v) or "none")
    )
    return {
        "queries": len(chosen),
        "prompts": tokens.get("calls", 0),
        "prompt_tokens": tokens.get("prompt_tokens", 0),
        "generated_tokens": tokens.get("generated_tokens", 0),
        "descriptions": table.num_rows - reasons["empty"],
        "removed": reasons,
        "kept": kept,
        "scored": _count(pc.is_valid(table["score"])),
    }


def _examples(candidates: str) -> pd.DataFrame:
    """Per query its most clicked video and the query's total clicks, from the clicked pairs only.

    Streams the candidates on the driver and keeps one row per query: the clicked pairs are a small part of
    the pairs, and the result is one row per query.
    """
    import pyarrow.dataset as pads

    best: dict[str, tuple] = {}
    total: dict[str, int] = {}
    data = pads.dataset(storage.parquet_files(candidates), format="parquet")
    for batch in data.to_batches(columns=["query", "video_id", "text", "clicks"], filter=pads.field("clicks") > 0):
        for q, v, t, c in zip(*(batch.column(i).to_pylist() for i in range(4))):
            total[q] = total.get(q, 0) + c
            cur = best.get(q)
            if cur is None or c > cur[1] or (c == cur[1] and v < cur[0]):  # more clicks, then the smaller id
                best[q] = (v, c, t)
    rows = [
        {"query": q, "video_id": v, "text": t, "clicks": c, "total_clicks": total[q]} for q, (v, c, t) in best.items()
    ]
    return pd.DataFrame(rows, columns=["query", "video_id", "text", "clicks", "total_clicks"])


def _token_counts(batch: pa.Table) -> pa.Table:
    return pa.table(
        {
            "calls": [int(pc.sum(batch["calls"]).as_py() or 0)],
            "prompt_tokens": [int(pc.sum(batch["prompt_tokens"]).as_py() or 0)],
            "generated_tokens": [int(pc.sum(batch["generated_tokens"]).as_py() or 0)],
        }
    )


# ---------------------------------------------------------------------------------------------- summary


def format_summary(stats: dict) -> str:
    """Tables a person reads: per source candidates and kept, samples per level, time per stage."""
    src = stats["sources"]
    lines = ["| source | candidates | removed | kept |", "|---|---:|---:|---:|"]
    lines.append(f"| log stages (P0) | {src['log']['pairs']:,} pairs | - | {src['log']['pairs']:,} |")
    r = src["reformulation"]
    if r["enabled"]:
        lines.append(
            f"| reformulation (P1) | {r['candidates']:,} | gate {r['gate_removed']:,}, theta<=alpha "
            f"{r['below_alpha']:,} | {r['kept']:,} |"
        )
    r = src["recommendation"]
    if r["enabled"]:
        lines.append(
            f"| recommendation (P2) | {r['candidates']:,} | theta<=alpha {r['below_alpha']:,} | {r['kept']:,} |"
        )
    r = src["llm"]
    if r["enabled"]:
        removed = ", ".join(f"{k} {v}" for k, v in r["removed"].items() if v) or "-"
        lines.append(f"| LLM (P3), {r['queries']} queries | {r['candidates']:,} | {removed} | {r['kept']:,} |")
    heavy = stats.get("heavy_users", {})
    if heavy.get("users"):
        lines.append(
            f"\n{heavy['users']:,} user(s) with more than {heavy['max_user_rows']:,} log rows ({heavy['rows']:,} rows) "
            "were left out of P1/P2 mining (crawlers or shared accounts; their search rows still give P0 samples)."
        )
    lines += ["", "| samples: source | level | rows |", "|---|---:|---:|"]
    for key, n in stats["samples"]["by_source_level"].items():
        s, lv = key.rsplit(":", 1)
        lines.append(f"| {s} | {lv} | {n:,} |")
    lines += ["", "| stage | seconds |", "|---|---:|"] + [f"| {k} | {v:.1f} |" for k, v in stats["seconds"].items()]
    d, llm = stats["discriminator"], stats["llm"]
    lines += [
        "",
        (
            f"discriminator pairs scored: {d['pairs_scored']:,}; LLM calls: {llm['calls']:,} ({llm['prompt_tokens']:,} "
            f"prompt + {llm['generated_tokens']:,} generated tokens)"
        ),
    ]
    ev = stats.get("evaluation")
    if ev:
        lines += [
            "",
            "| against the world's ground truth | candidates | relevant share | kept | precision | recall |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, e in ev["sources"].items():
            lines.append(
                f"| {name} | {e['candidates']:,} | {e['relevant_candidates']} | {e['kept']:,} | {e['precision']} | "
                f"{e['recall_within_candidates']} |"
            )
        dd = ev["discriminator"]
        lines.append(
            f"| discriminator at alpha {ev['alpha']} | {dd['pairs']:,} | - | - | {dd['precision_at_alpha']} | "
            f"{dd['recall_at_alpha']} |"
        )
        b = ev["bubble"]
        lines.append(
            "\nminority-sense videos search never exposed for an ambiguous query, now positives: level 5: "
            f"{b['level5']}, level 4: {b['level4']} ({b['videos']} videos, {b['queries']} queries)"
        )
    return "\n".join(lines)
