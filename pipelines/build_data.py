"""The CroPS data engine: validated logs -> HLA-labelled training samples.

    python pipelines/build_data.py --logs runs/validated --out runs/data [--config engine.yaml]
    python pipelines/build_data.py --logs runs/world --validate --out runs/data     # raw logs: validate first
    ray job submit --working-dir . -- python pipelines/build_data.py --logs s3://.../validated --out ...

Mines reformulation (P1), recommendation (P2) and LLM world-knowledge (P3) positives, verifies them with the
calibrated semantic discriminator (theta > alpha), and assigns HLA levels together with the log stages (P0).
Writes OUT/samples/ (parquet, schema.SAMPLES_SCHEMA), OUT/candidates/ (every (query, video) pair with its
sources and theta), OUT/llm_descriptions/ (P3 with the quality-control reason of each drop),
OUT/discriminator_calibration.json and OUT/stats.json; OUT is replaced atomically. With --eval (or a world's
eval/ next to raw logs) it also reports precision against the ground truth.

Settings come from the YAML (keys of crops_ray.engine.config.EngineConfig, nested: discriminator,
reformulation, recommendation, world_knowledge) with the flags below applied on top.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray.config import add_config_args, load_config
from crops_ray.engine.build import EngineConfig, EngineInputError, build_data, format_summary
from crops_ray.layout import DataLayout
from crops_ray.schema import LogSchemaError


def parse_config(args: argparse.Namespace) -> EngineConfig:
    flags = {
        "sources": None if args.sources is None else [s.strip() for s in args.sources.split(",") if s.strip()],
        "alpha": args.alpha,
        "reformulation.window_s": args.window_s,
        "reformulation.gate": args.gate,
        "recommendation.per_user": args.rec_per_user,
        "recommendation.before_s": args.rec_window_s,
        "recommendation.after_s": args.rec_window_s,
        "world_knowledge.backend": args.llm_backend,
        "world_knowledge.model": args.llm_model,
        "world_knowledge.max_queries": args.llm_max_queries,
        "world_knowledge.samples_per_query": args.llm_samples,
        "world_knowledge.max_new_tokens": args.llm_max_new_tokens,
        "discriminator.model": args.discriminator_model,
        "discriminator.kind": args.discriminator_kind,
        "discriminator.calibration": args.calibration,
        "discriminator.labelled_pairs": args.labelled_pairs,
        "discriminator.fine_tune": args.fine_tune_discriminator,
        "shuffle_partitions": args.partitions,
        "keep_work": True if args.keep_work else None,
    }
    return load_config(EngineConfig, args.config, flags, args.set)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--logs", required=True, help="validated log folder (pipelines/validate.py output), or raw logs with --validate"
    )
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    add_config_args(p, "EngineConfig")
    p.add_argument("--validate", action="store_true", help="validate raw --logs into OUT/validated first")
    p.add_argument("--eval", dest="eval_dir", help="ground truth folder (a world's eval/) to measure precision against")
    p.add_argument(
        "--sources", help="perspectives to mine, comma-separated subset of p1,p2,p3 ('' for log stages only)"
    )
    p.add_argument("--alpha", type=float, help="keep mined candidates with theta > alpha (paper: 0.6)")
    p.add_argument("--window-s", type=int, help="reformulation window in seconds (paper: 90)")
    p.add_argument("--gate", choices=["discriminator", "lexical", "none"], help="reformulation similarity gate")
    p.add_argument("--rec-per-user", type=int, help="rec-feed interactions per user and query (paper: 100)")
    p.add_argument("--rec-window-s", type=int, help="rec-feed window on each side of the query time, seconds")
    p.add_argument("--llm-backend", choices=["transformers", "vllm"])
    p.add_argument("--llm-model", help="packaged alias (smollm2) or a local model folder")
    p.add_argument("--llm-max-queries", type=int, help="queries prompted for P3 (most clicked first; 0: all)")
    p.add_argument("--llm-samples", type=int, help="prompts (descriptions) per query")
    p.add_argument("--llm-max-new-tokens", type=int)
    p.add_argument("--discriminator-model", help="packaged alias (minilm) or a local Hugging Face folder")
    p.add_argument("--discriminator-kind", choices=["bi-encoder", "cross-encoder"])
    p.add_argument("--calibration", help="a discriminator calibration JSON to use as is")
    p.add_argument(
        "--fine-tune-discriminator",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the gate on its labels (the log's own, or --labelled-pairs) before calibrating (default on)",
    )
    p.add_argument("--labelled-pairs", help="parquet/CSV with query, text, label to train and calibrate the gate")
    p.add_argument("--partitions", type=int, help="shuffle partitions (default: from the input size)")
    p.add_argument("--keep-work", action="store_true", help="keep intermediate parquet in OUT/_work/")
    args = p.parse_args(argv)
    try:
        cfg = parse_config(args)
        stats = build_data(args.logs, args.out, cfg, validate=args.validate, eval_dir=args.eval_dir)
    except (EngineInputError, LogSchemaError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print()
    print(format_summary(stats))
    out = DataLayout(args.out)
    print(f"\nsamples: {out.samples}/  stats: {out.stats_json}  ({stats['seconds']['total']:.0f}s)")
    return stats


if __name__ == "__main__":
    main()
