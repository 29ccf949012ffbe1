"""Generate the embedded filter-bubble world in the log contract's layout.

    python pipelines/generate_world.py --scale small --seed 0 --out runs/world
    ray job submit --working-dir . -- python pipelines/generate_world.py --scale large --ray --out s3://...

Writes OUT/videos/, OUT/search_log/, OUT/rec_log/ (parquet shards), OUT/eval/ (ground truth) and
OUT/world.json (config and statistics), and prints the statistics.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray.config import add_config_args, pipeline_config
from crops_ray.storage import OutputError
from crops_ray.world.generator import SCALES, WorldConfig, format_stats, generate_world


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument(
        "--scale",
        default="small",
        choices=sorted(SCALES),
        help="tiny (tests), small (demo), medium (10x the demo's users: bench/scaling.py), large (millions of rows)",
    )
    p.add_argument("--seed", type=int, default=0)
    add_config_args(p, "WorldConfig (applied over the scale)")
    p.add_argument("--users", type=int, help="override the number of users")
    p.add_argument("--shards", type=int, help="override the number of user shards (output files)")
    p.add_argument(
        "--ray",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="generate shards as Ray tasks (default: only for --scale large)",
    )
    args = p.parse_args(argv)
    cli = {"seed": args.seed, "users": args.users, "shards": args.shards}
    cfg = pipeline_config(p, WorldConfig, args, cli, defaults=SCALES[args.scale])
    use_ray = args.ray if args.ray is not None else args.scale == "large"
    print(
        f"generating the {args.scale} world (seed {cfg.seed}, {cfg.users:,} users, {cfg.shards} "
        f"shards{', on Ray' if use_ray else ''}) -> {args.out}"
    )
    try:
        stats = generate_world(args.out, cfg, use_ray=use_ray)
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(format_stats(stats))
    return stats


if __name__ == "__main__":
    main()
