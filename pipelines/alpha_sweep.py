"""The alpha sweep: the discriminator's threshold from 0.3 to 0.9 on a finished build_data output, scored once.

    python pipelines/alpha_sweep.py --data runs/demo/seed-0/data --logs runs/demo/seed-0/world --out runs/alpha_sweep
    python pipelines/alpha_sweep.py --data DATA --logs LOGS --out OUT --downstream --alphas 0.5,0.6,0.7
    python pipelines/alpha_sweep.py --data DATA --out OUT                # no ground truth: counts only

Relabels the P1/P2 candidates build_data kept in DATA/candidates/ at each alpha (its stored theta; no model is
loaded) and reassembles the HLA samples with the engine's own code. Reports per alpha the kept counts, and with
ground truth (--eval, default LOGS/eval when it holds judgments) their precision and recall (relevant =
grade >= 2, as the build's stats).
--downstream also trains and evaluates CroPS on each alpha's samples (the demo's harness and budget: minutes per
alpha) on LOGS (videos/ and eval/ targets), with P0 from --validated (default: the logs the build read).
Writes OUT/alpha_sweep.json, OUT/alpha_sweep.md and OUT/alpha_sweep.png (and OUT/alpha-A/crops/ per alpha).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray import alpha_sweep as AS
from crops_ray.config import add_config_args, pipeline_config
from crops_ray.layout import DataLayout, LogsLayout
from crops_ray.report.sweep import downstream_table, mining_table
from crops_ray.storage import check_output
from crops_ray.world.audit import judgments_path


def ground_truth(eval_dir: str | None, logs: str | None) -> str | None:
    """The folder with the judgments to measure precision against: --eval (which must hold them), else LOGS/eval
    when it has them, else None (counts only)."""
    if eval_dir:
        if not os.path.exists(judgments_path(eval_dir)):
            raise FileNotFoundError(f"--eval {eval_dir}: no judgments.parquet or qrels.parquet there")
        return eval_dir
    if logs and os.path.exists(judgments_path(LogsLayout(logs).eval)):
        return LogsLayout(logs).eval
    return None


def p0_source(validated: str | None, stats: dict, data: str, logs: str) -> str:
    """Where the P0 samples come from for training: --validated, else the validated logs the build read (when
    they are still there), else DATA/validated (build_data --validate), else LOGS."""
    for folder in (validated, stats.get("logs"), DataLayout(data).validated):
        if folder and os.path.isdir(f"{folder}/search_log"):
            return folder
    if validated:
        raise FileNotFoundError(f"--validated {validated}: no search_log/ there")
    return logs


def downstream_args(args, stats: dict, cfg) -> dict | None:
    """run_sweep's downstream settings from the command line (``cfg``: its ExperimentConfig); None without
    --downstream."""
    if not args.downstream:
        return None
    from crops_ray.hla import load_samples

    if not args.logs:
        raise AS.SweepInputError(
            "--downstream needs --logs: the folder with videos/ and eval/ the methods are evaluated on"
        )
    log, what = load_samples(p0_source(args.validated, stats, args.data, args.logs))
    print(f"P0 for training: {what}")
    return {"logs": args.logs, "exp_cfg": cfg, "seed": args.seed, "log": log, "reuse": args.reuse}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a build_data output (stats.json, candidates/ with theta)")
    p.add_argument("--out", required=True, help="folder for alpha_sweep.{json,md,png} (outside every input)")
    p.add_argument(
        "--alphas", help=f"comma-separated thresholds (default {','.join(f'{a:g}' for a in AS.DEFAULT_ALPHAS)})"
    )
    p.add_argument(
        "--logs",
        help="the logs the build came from (a world's folder): LOGS/eval is the ground truth, "
        "and --downstream evaluates on them",
    )
    p.add_argument(
        "--eval",
        dest="eval_dir",
        help="ground truth folder (judgments.parquet or qrels.parquet) to "
        "measure precision against (default LOGS/eval)",
    )
    p.add_argument(
        "--min-grade",
        type=int,
        help="a pair is relevant at this qrels grade or above (default: the "
        "build's audit_min_grade, 2, as its stats.json)",
    )
    p.add_argument(
        "--downstream", action="store_true", help="also train and evaluate CroPS per alpha (minutes per alpha)"
    )
    p.add_argument("--validated", help="validated logs for the P0 samples (default: the logs the build read)")
    add_config_args(p, "ExperimentConfig (train, groups, eval) for --downstream")
    p.add_argument("--max-steps", type=int, help="training steps per alpha")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--reuse", action="store_true", help="with --downstream: read back alphas already trained under --out"
    )
    args = p.parse_args(argv)
    if (args.config or args.set) and not args.downstream:
        p.error("--config and --set are ExperimentConfig settings for --downstream training; alone they do nothing")
    exp_cfg = None
    if args.downstream:
        from crops_ray.experiment import ExperimentConfig

        exp_cfg = pipeline_config(p, ExperimentConfig, args, {"train.max_steps": args.max_steps})
    try:
        alphas = AS.parse_alphas(args.alphas)
        check_output(args.out, [args.data, args.logs, args.eval_dir, args.validated], replaces=False)
        stats, _ = AS.read_build(args.data)
        truth = ground_truth(args.eval_dir, args.logs)
        result = AS.run_sweep(args.data, args.out, alphas, truth, args.min_grade, downstream_args(args, stats, exp_cfg))
    except (ValueError, FileNotFoundError) as exc:  # SweepInputError and storage.OutputError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print()
    print(mining_table(result["rows"], result["build_alpha"]))
    downstream = downstream_table(result["rows"], result["build_alpha"])
    if downstream:
        print("\n" + downstream)
    print("\n" + "\n".join(f"- {line}" for line in result["summary"]))
    print(f"\nalpha sweep finished in {result['seconds']:.0f}s: {args.out}/alpha_sweep.md, .json, .png")
    return result


if __name__ == "__main__":
    main()
