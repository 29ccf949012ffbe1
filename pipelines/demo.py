"""The end-to-end demo: the paper's Table 1 on the embedded world, or on your logs.

    python pipelines/demo.py                                   # small world, seed 0, Table-1 methods
    python pipelines/demo.py --seeds 0,1,2 --ablations         # mean and spread over 3 seeds, with ablations
    python pipelines/demo.py --logs their_logs/ --out runs/x   # your logs (videos/, search_log/, rec_log/, eval/)

Per seed: generate the world (unless --logs) -> validate -> build the CroPS data (P0-P3, HLA) -> train each
method -> evaluate each (FAISS top-100: Recall@100 CT / QR, NDCG@4). Writes OUT/report.md (the table in the
paper's layout, a chart, the filter bubble, DPR vs CroPS top-10 for ambiguous queries), OUT/metrics.json and
OUT/table1.png.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray.config import add_config_args, pipeline_config
from crops_ray.demo import DemoSettings, run_demo
from crops_ray.experiment import ABLATIONS, METHODS, NEGATIVE_BASELINES, SPARSE, TABLE1, ExperimentConfig
from crops_ray.layout import RunLayout
from crops_ray.report.demo import readme_block, readme_note
from crops_ray.report.readme import update_readme
from crops_ray.storage import OutputError, check_output


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--logs", help="your log folder instead of the generated world")
    p.add_argument("--scale", default="small", help="world scale: tiny, small, medium, large")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (world and training); 3 give mean and spread")
    p.add_argument("--ablations", action="store_true", help="add crops_p1, crops_p2, crops_p3, crops_binary")
    p.add_argument(
        "--sparse",
        action="store_true",
        help=f"add the learned sparse retriever (CSR): {', '.join(SPARSE)} (the paper's Sparse Model)",
    )
    p.add_argument(
        "--methods",
        help=f"comma-separated subset of {list(METHODS)}; the negative-sampling baselines "
        f"{list(NEGATIVE_BASELINES)} run only when named here",
    )
    p.add_argument("--max-steps", type=int, help="training steps per method")
    p.add_argument(
        "--doc-tower",
        choices=("frozen", "train"),
        help="frozen (default: query-side fine-tuning, the corpus encoded once) or train (both towers, as the paper; "
        "several times slower on CPUs)",
    )
    add_config_args(p, "ExperimentConfig (train, groups, eval)")
    p.add_argument("--engine-config", help="YAML of the data engine's EngineConfig")
    p.add_argument(
        "--readme", help="also write the table and chart into this README (between its table1 markers) and docs/"
    )
    p.add_argument("--no-online", action="store_true", help="skip the simulated online A/B test (Table 2)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="a seed whose data, methods and online test are already under --out is read back, not rerun "
        "(regenerates the report)",
    )
    return p


def chosen_methods(p: argparse.ArgumentParser, args) -> list[str]:
    """--methods, else Table 1's (and the ablations'); the sparse ones added with --sparse."""
    methods = args.methods.split(",") if args.methods else list(TABLE1) + (list(ABLATIONS) if args.ablations else [])
    methods += [m for m in SPARSE if args.sparse and m not in methods]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    return methods


def settings(p: argparse.ArgumentParser, args) -> DemoSettings:
    methods = chosen_methods(p, args)
    flags = {"train.max_steps": args.max_steps}
    if args.doc_tower:
        flags.update({"train.doc_tower": args.doc_tower, "train.shared_towers": args.doc_tower == "train"})
    cfg = pipeline_config(p, ExperimentConfig, args, flags)
    try:
        check_output(args.out, [args.logs], replaces=False)
    except OutputError as exc:
        p.error(str(exc))
    return DemoSettings(
        out=args.out,
        seeds=[int(s) for s in args.seeds.split(",")],
        seeds_text=args.seeds,
        methods=methods,
        cfg=cfg,
        logs=args.logs,
        scale=args.scale,
        engine_config=args.engine_config,
        online_wanted=not args.no_online,
        reuse=args.reuse,
    )


def main(argv: list[str] | None = None) -> dict:
    p = parser()
    args = p.parse_args(argv)
    run, report = run_demo(settings(p, args))
    layout = RunLayout(args.out)
    if args.readme:
        note = readme_note(run, report)
        update_readme(args.readme, readme_block(run, report), layout.table1_png, report.total_seconds, note)
    print("\n" + report.table)
    print(f"\ndemo finished in {report.total_seconds:.0f}s; report: {layout.report_md}")
    if run.tracking_uri:
        print(f"MLflow runs: {run.tracking_uri} (mlflow ui --backend-store-uri {run.tracking_uri})")
    return run.summary


if __name__ == "__main__":
    main()
