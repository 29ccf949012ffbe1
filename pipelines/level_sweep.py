"""HLA's levels on your logs: CroPS trained once per level map, picked on held-out queries of the training period.

    python pipelines/level_sweep.py --demo runs/demo --seeds 0,1,2 --out runs/levels        # a demo's builds
    python pipelines/level_sweep.py --demo runs/trec-demo --logs data/trec --out runs/levels-trec
    python pipelines/level_sweep.py --data runs/data --validated runs/data/validated --logs LOGS --out runs/levels
    python pipelines/level_sweep.py ... --maps paper,mined_below_clicks,binary --max-steps 50

The maps (crops_ray/hla.py LEVEL_MAPS): paper (the default), mined_below_clicks, exposed_negative,
lower_stages_negative, binary. Each trains CroPS on the same build, budget, initialisation and seed; only the levels
differ (crops_ray/level_sweep.py). A hashed 10 % of the queries with clicks is held out of training: the map that
retrieves their clicks best is the one the sweep picks. LOGS/eval/ (where it exists) only confirms: choosing by it is
tuning on the test set. Writes OUT/level_sweep.{md,json} and one folder per seed and map.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray import level_sweep as LS  # noqa: E402
from crops_ray.config import add_config_args, pipeline_config  # noqa: E402
from crops_ray.layout import DataLayout, RunLayout  # noqa: E402
from crops_ray.storage import OutputError, check_output  # noqa: E402

WARNING = (
    "The pick is made on held-out queries of the training period, from the logs alone; the test columns confirm it. "
    "Choosing a map by its test numbers would be tuning on the test set."
)


def inputs(args) -> list[tuple[int, str, str, str]]:
    """(seed, data, validated, logs) per seed."""
    if args.demo:
        demo = RunLayout(args.demo)
        folders = {s: demo.seed(s) for s in map(int, args.seeds.split(","))}
        return [(s, f.data.root, f.validated, args.logs or f.world.root) for s, f in folders.items()]
    return [(args.seed, args.data, args.validated or DataLayout(args.data).validated, args.logs)]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", help="a demo's --out: seed-N/data, seed-N/validated and seed-N/world per seed")
    p.add_argument("--seeds", default="0", help="with --demo: comma-separated seeds")
    p.add_argument("--data", help="a build_data output (stats.json, candidates/): instead of --demo")
    p.add_argument("--validated", help="with --data: the validated logs the build read (default DATA/validated)")
    p.add_argument("--logs", help="the logs (videos/, and eval/ to confirm on); with --demo: default seed-N/world")
    p.add_argument("--out", required=True)
    p.add_argument("--maps", help="comma-separated level maps (default: all; the paper's is always the reference)")
    p.add_argument("--seed", type=int, default=0, help="with --data: the training seed")
    p.add_argument("--max-steps", type=int, help="training steps per map (default: the demo's)")
    p.add_argument("--reuse", action="store_true", help="read back the maps already trained under --out")
    add_config_args(p, "ExperimentConfig (train, groups, eval)")
    args = p.parse_args(argv)
    if bool(args.demo) == bool(args.data) or (args.data and not args.logs):
        p.error("pass --demo DIR, or --data DATA with --logs LOGS")
    from crops_ray.experiment import ExperimentConfig

    exp_cfg = pipeline_config(p, ExperimentConfig, args, {"train.max_steps": args.max_steps})
    try:
        maps = LS.parse_maps(args.maps)
        runs = inputs(args)
        check_output(args.out, [path for run in runs for path in run[1:]], replaces=False)
    except (ValueError, OutputError) as exc:
        p.error(str(exc))
    os.makedirs(args.out, exist_ok=True)
    results = []
    for seed, data, validated, logs in runs:
        print(f"seed {seed}: {data}")
        results.append(
            LS.run_level_sweep(
                data, logs, validated, RunLayout(args.out).seed(seed).root, maps, exp_cfg, seed, args.reuse
            )
        )
    table = LS.sweep_table(results)
    text = f"# Level sweep\n\n{table}\n\n{WARNING}\n"
    with open(f"{args.out}/level_sweep.md", "w") as f:
        f.write(text)
    with open(f"{args.out}/level_sweep.json", "w") as f:
        json.dump(results, f, indent=2, default=str)
    print("\n" + text)
    return {"results": results, "table": table}


if __name__ == "__main__":
    main()
