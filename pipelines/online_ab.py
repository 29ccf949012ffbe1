"""The paper's Table 2 as a simulated online A/B test on the embedded world.

    python pipelines/online_ab.py --world runs/demo/seed-0/world --runs runs/demo/seed-0 --out runs/online
    python pipelines/online_ab.py ... --methods bm25,zero_shot,dpr,crops --baseline dpr

Each method (trained under --runs by pipelines/demo.py, or BM25 / the pretrained encoder) becomes the
platform's retrieval channel for a fresh period of the same world; oracle, logging and random arms bound the
scale. Prints CTR, long-play rate and reformulation rate per arm with their relative change vs the baseline
and a 95% confidence interval over users; writes OUT/online.json and OUT/online_counts.parquet. An OUT that
is, contains or lies inside --world or --runs is refused before anything is read.
On logs that are not a generated world (no world.json) it exits 0 with a one-line reason: it needs users.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray.config import add_config_args, pipeline_config
from crops_ray.experiment import METHODS, TABLE1, ExperimentConfig, online_ab
from crops_ray.layout import LogsLayout, SeedLayout
from crops_ray.storage import OutputError, check_output
from crops_ray.world.online import OnlineConfig


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", required=True, help="a world folder written by pipelines/generate_world.py")
    p.add_argument("--runs", required=True, help="the folder holding each method's trained model (RUNS/NAME/model)")
    p.add_argument("--out", required=True)
    p.add_argument("--methods", default=",".join(TABLE1), help=f"comma-separated subset of {list(METHODS)}")
    p.add_argument("--baseline", default="dpr")
    p.add_argument("--sessions-per-user", type=float)
    add_config_args(p, "ExperimentConfig (the model alias, eval settings)")
    args = p.parse_args(argv)
    exp_cfg = pipeline_config(p, ExperimentConfig, args)
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    try:  # before anything is read or written: OUT's files must never land in (or over) the world or the models
        check_output(args.out, [args.world, args.runs], replaces=False)
    except OutputError as exc:
        p.error(str(exc))
    if not os.path.exists(LogsLayout(args.world).world_json):
        print(
            f"online A/B skipped: {args.world} is not a generated world (no world.json); the simulation needs its users"
        )
        return None
    missing = [m for m in methods if METHODS[m].sources and not os.path.isdir(SeedLayout(args.runs).method(m).model)]
    if missing:
        p.error(f"no trained model for {missing} under {args.runs} (expected {args.runs}/NAME/model)")
    ocfg = OnlineConfig()
    if args.sessions_per_user:
        ocfg.sessions_per_user = args.sessions_per_user
    summary, table = online_ab(
        args.world,
        args.runs,
        methods,
        args.out,
        exp_cfg,
        args.baseline,
        ocfg,
    )
    print("\n" + table)
    return summary


if __name__ == "__main__":
    main()
