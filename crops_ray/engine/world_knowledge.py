"""P3, world-knowledge positives: an LLM describes other videos that match a query (synthetic documents, level 4).

One-shot prompting: the query plus one known relevant video (the query's most clicked video); the LLM writes
the description (title and caption) of a DIFFERENT video that matches the query. Each query gets
``samples_per_query`` prompts, each asking for a different kind of video (tutorial, news clip, ...), so the
answers differ even from a small model. Each surviving description becomes a synthetic document with a fresh
id (``llm-`` + a hash of query and text), text only.

The data flows one row per query (no shuffle): prompt rows -> :func:`generate` adds ``generations`` (one
answer per sample), ``prompt_tokens`` and ``generated_tokens`` ->
:class:`~crops_ray.engine.descriptions.DescriptionVerifier` parses, filters and verifies them and emits one row
per description with the reason it was dropped (null when kept).

Where each part lives: this module holds the choice of queries and their examples, and the two Ray Data steps
(:func:`generate`, :func:`verify`); :mod:`crops_ray.engine.llm` the model and the two backends (``transformers`` on
CPU, ``vllm`` on GPU); :mod:`crops_ray.engine.descriptions` the prompt, parsing, quality control and the verifier;
:mod:`crops_ray.engine.config` the settings (:class:`WorldKnowledgeConfig`, read by all three). Names other code
imports from here are re-exported.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow.compute as pc

from crops_ray import storage
from crops_ray.engine.config import WorldKnowledgeConfig
from crops_ray.engine.descriptions import (
    DESCRIPTION_SCHEMA,
    REASONS,
    DescriptionVerifier,
    apply_theta,
    build_messages,
    parse_descriptions,
    prompt_rows,
    quality_control,
    synthetic_id,
)
from crops_ray.engine.io import count_true, read_parquet, sum_counts, write_parquet
from crops_ray.engine.llm import (
    GENERATED_SCHEMA,
    TransformersGenerator,
    _explode_samples,
    _gather_samples,
    _vllm_preprocess,
    llm_path,
    vllm_processor,
    vllm_processor_config,
)
from crops_ray.engine.summary import LlmCounts
from crops_ray.plumbing import map_with_actors

if TYPE_CHECKING:
    from crops_ray.discriminator import Calibration
    from crops_ray.engine.inputs import Run

__all__ = [  # re-exported: other code imports these from crops_ray.engine.world_knowledge
    "DESCRIPTION_SCHEMA",
    "GENERATED_SCHEMA",
    "REASONS",
    "DescriptionVerifier",
    "TransformersGenerator",
    "WorldKnowledgeConfig",
    "_gather_samples",
    "_vllm_preprocess",
    "apply_theta",
    "build_messages",
    "choose_queries",
    "generate",
    "llm_path",
    "parse_descriptions",
    "prompt_rows",
    "quality_control",
    "query_examples",
    "reason_counts",
    "run_stages",
    "synthetic_id",
    "verify",
    "vllm_processor",
    "vllm_processor_config",
]

# ---------------------------------------------------------------------------------------------- queries


def query_examples(candidates: str) -> pd.DataFrame:
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


def choose_queries(examples: pd.DataFrame, max_queries: int) -> pd.DataFrame:
    """Queries with the most clicks first (ties by text), at most ``max_queries`` (0: all)."""
    ranked = examples.sort_values(["total_clicks", "query"], ascending=[False, True], kind="stable")
    return (ranked.head(max_queries) if max_queries else ranked).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- generate and verify


def generate(ds, cfg: WorldKnowledgeConfig, partitions: int = 2, progress=print):
    """Prompt rows (one per query) -> GENERATED_SCHEMA rows: ``samples_per_query`` answers per query."""
    model_dir = llm_path(cfg, progress)  # dequantise once on the driver's node before any actor starts
    if cfg.backend == "vllm":
        answers = vllm_processor(cfg, model_dir)(
            ds.map_batches(_explode_samples, batch_format="pyarrow", fn_kwargs={"n": cfg.samples_per_query})
        )
        return answers.groupby("query", num_partitions=partitions).map_groups(
            _gather_samples, batch_format="pandas", fn_kwargs={"max_new_tokens": cfg.max_new_tokens}
        )
    return map_with_actors(
        ds,
        TransformersGenerator,
        constructor_kwargs={"cfg": cfg},
        batch_size=cfg.prompts_per_batch,
        num_cpus=cfg.num_cpus,
        pool_min=cfg.pool_min,
        pool_max=cfg.pool_max,
        max_restarts=cfg.max_restarts,
        max_task_retries=cfg.max_task_retries,
    )


def verify(ds, discriminator_cfg, calibration, alpha: float, cfg: WorldKnowledgeConfig):
    """GENERATED_SCHEMA rows -> DESCRIPTION_SCHEMA rows, through an actor pool of :class:`DescriptionVerifier`."""
    qc = {
        "min_words": cfg.min_words,
        "max_chars": cfg.max_chars,
        "near_duplicate": cfg.near_duplicate,
        "example_copy": cfg.example_copy,
    }
    kwargs = {
        "discriminator_cfg": discriminator_cfg,
        "calibration": asdict(calibration),
        "alpha": alpha,
        "qc": qc,
        "cap": cfg.per_query_cap,
    }
    d = discriminator_cfg
    return map_with_actors(
        ds,
        DescriptionVerifier,
        constructor_kwargs=kwargs,
        batch_size=16,
        num_cpus=d.num_cpus,
        pool_min=d.pool_min,
        pool_max=d.pool_max,
        num_gpus=d.num_gpus,
        max_restarts=d.max_restarts,
        max_task_retries=d.max_task_retries,
    )


def reason_counts(reasons: list) -> dict[str, int]:
    counts = {r: 0 for r in REASONS}
    for r in reasons:
        if r is not None:
            counts[r] = counts.get(r, 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------- the engine's P3 stages


def run_stages(run: Run, calibration: Calibration) -> LlmCounts:
    """The engine's two P3 stages: prompt the LLM on the most clicked queries (``llm_generate``, answers in
    ``_work/llm_generated``), then parse, de-duplicate and verify its descriptions (``llm_verify``) ->
    ``OUT/llm_descriptions``."""
    import ray.data

    cfg, staging, work = run.cfg, run.staging, run.work
    wk = cfg.world_knowledge
    with run.clock.stage(
        "llm_generate",
        f"P3: prompting the LLM ({wk.backend}, {wk.model}) on up to {wk.max_queries or 'all'} queries x "
        f"{wk.samples_per_query} samples",
    ):
        chosen = choose_queries(query_examples(f"{staging}/candidates"), wk.max_queries)
        prompts = prompt_rows(chosen, wk)
        ds = None
        if prompts:
            per_batch = wk.prompts_per_batch
            ds = generate(
                ray.data.from_items(prompts, override_num_blocks=max(1, min(-(-len(prompts) // per_batch), 64))),
                wk,
                run.partitions,
                progress=run.indented,
            )
        write_parquet(ds, f"{work}/llm_generated", GENERATED_SCHEMA)
    tokens = sum_counts(f"{work}/llm_generated", lambda t: t, ["calls", "prompt_tokens", "generated_tokens"])
    run.indented(
        f"{len(chosen)} queries, {tokens.get('calls', 0):,} "
        f"prompts, {tokens.get('generated_tokens', 0):,} tokens generated"
    )

    with run.clock.stage("llm_verify", "P3: parsing, de-duplicating and verifying descriptions with the discriminator"):
        ds = (
            verify(read_parquet(f"{work}/llm_generated"), cfg.discriminator, calibration, cfg.alpha, wk)
            if prompts
            else None
        )
        write_parquet(ds, f"{staging}/llm_descriptions", DESCRIPTION_SCHEMA)
    table = storage.read_table(storage.parquet_files(f"{staging}/llm_descriptions"), columns=["reason", "score"])
    reasons = reason_counts(table["reason"].to_pylist())
    kept, descriptions = table.num_rows - sum(reasons.values()), table.num_rows - reasons["empty"]
    run.indented(
        f"{descriptions:,} descriptions, kept {kept:,}; removed "
        + (", ".join(f"{k} {v}" for k, v in reasons.items() if v) or "none")
    )
    return LlmCounts(
        queries=len(chosen),
        prompts=tokens.get("calls", 0),
        prompt_tokens=tokens.get("prompt_tokens", 0),
        generated_tokens=tokens.get("generated_tokens", 0),
        descriptions=descriptions,
        removed=reasons,
        kept=kept,
        scored=count_true(pc.is_valid(table["score"])),
    )
