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
import glob
import json
import os
import sys
import time
from dataclasses import asdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray.config import add_config_args, load_config, pipeline_config
from crops_ray.experiment import (
    ABLATIONS,
    METHODS,
    NEGATIVE_BASELINES,
    SPARSE,
    TABLE1,
    ExperimentConfig,
    aggregate,
    log_result,
    method_run,
    online_ab,
    run_method,
)
from crops_ray.report.demo import DemoRun, readme_block, seed_comparisons, write_report
from crops_ray.report.readme import reuse_note, update_readme
from crops_ray.storage import SUCCESS_MARKER, OutputError, check_output
from crops_ray.tracking import Run, start_run
from crops_ray.validate import ValidationConfig, format_summary, validate_logs
from crops_ray.world.generator import format_stats, generate_world, world_config

# The CPU demo's data-engine settings (a YAML passed with --engine-config applies on top): P3 on 4 queries (the CPU
# LLM is a stand-in for vLLM on a GPU), so that one seed fits 20 minutes on 2 cores.
DEMO_ENGINE = {"world_knowledge": {"max_queries": 4}}


def _engine_config(path: str | None, seed: int):
    from crops_ray.engine.build import EngineConfig

    cfg = load_config(EngineConfig, path, defaults=DEMO_ENGINE)
    cfg.world_knowledge.seed = seed
    return cfg


def log_report(tracking: Run, run: DemoRun) -> None:
    """The demo's run: each method's mean over the seeds as ``METHOD.METRIC`` metrics, and the report, metrics.json
    and the charts as artifacts."""
    tracking.log_metrics({f"{m}.{k}": v for m, row in run.summary.items() for k, v in row.items()})
    for path in [f"{run.out}/report.md", f"{run.out}/metrics.json", *sorted(glob.glob(f"{run.out}/*.png"))]:
        tracking.log_artifact(path)


def main(argv: list[str] | None = None) -> dict:
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
    args = p.parse_args(argv)
    methods = args.methods.split(",") if args.methods else list(TABLE1) + (list(ABLATIONS) if args.ablations else [])
    methods += [m for m in SPARSE if args.sparse and m not in methods]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    flags = {"train.max_steps": args.max_steps}
    if args.doc_tower:
        flags.update({"train.doc_tower": args.doc_tower, "train.shared_towers": args.doc_tower == "train"})
    cfg = pipeline_config(p, ExperimentConfig, args, flags)
    seeds = [int(s) for s in args.seeds.split(",")]
    try:
        check_output(args.out, [args.logs], replaces=False)
    except OutputError as exc:
        p.error(str(exc))
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    needs_data = any(METHODS[m].sources for m in methods)
    # The online A/B test needs simulated users: a generated world (world.json), never a user's own logs.
    online = not args.no_online and (args.logs is None or os.path.exists(os.path.join(args.logs, "world.json")))
    labels = {m: METHODS[m].label for m in methods}
    run = DemoRun(args.out, seeds, args.seeds, methods, labels, started, args.logs, args.scale)
    run.online_skipped = not online and not args.no_online
    results, sections, timings = run.results, run.seed_sections, run.timings
    steps = len(seeds) * (3 + len(methods) + online)
    step = 0

    def stage(what: str) -> None:
        nonlocal step
        step += 1
        print(f"\n[{step}/{steps}] {what}  ({time.time() - started:.0f}s)", flush=True)

    reused_seeds: list[int] = []  # seeds whose outputs --reuse found complete (nothing of them rerun)
    partly_reused: dict[int, list[str]] = {}  # seed -> the methods --reuse read back (the rest ran now)
    tracking = start_run(
        args.out,
        f"demo {args.logs or args.scale} seeds {args.seeds}",
        tags={"pipeline": "demo", "scale": args.scale, "seeds": args.seeds, "methods": ",".join(methods)},
        params={"logs": args.logs or "generated", "scale": args.scale, "seeds": args.seeds, "experiment": asdict(cfg)},
    )
    with tracking:  # the demo's run; each (seed, method) a run nested in it (crops_ray.experiment.method_run)
        for seed in seeds:
            root = f"{args.out}/seed-{seed}"
            logs = args.logs
            if logs is None:
                logs = f"{root}/world"
                stage(f"seed {seed}: generating the {args.scale} world")
                t = time.time()
                if args.reuse and os.path.exists(f"{logs}/world.json"):
                    with open(f"{logs}/world.json") as f:
                        stats = json.load(f)["stats"]
                else:
                    stats = generate_world(logs, world_config(args.scale, seed=seed))
                    timings[f"seed {seed}: generate"] = time.time() - t
                if seed == seeds[0]:
                    sections.append("## The world (first seed)\n\n" + format_stats(stats))
            else:
                step += 1
            # --reuse reads back what an earlier run under --out finished: the data (when its stats, samples and the
            # validated log are there) and each method with a result.json; only what is missing runs now.
            data_done = (
                args.reuse
                and os.path.exists(f"{root}/data/stats.json")
                and os.path.exists(f"{root}/validated/{SUCCESS_MARKER}")
            )
            methods_done = {m for m in methods if args.reuse and os.path.exists(f"{root}/{m}/result.json")}
            reused = data_done and methods_done == set(methods)
            if reused:
                reused_seeds.append(seed)
            elif methods_done:
                partly_reused[seed] = sorted(methods_done)
            stage(f"seed {seed}: validating {logs}" + (" (reused)" if data_done else ""))
            if not data_done:
                t = time.time()
                summaries = validate_logs(logs, f"{root}/validated", ValidationConfig())
                timings[f"seed {seed}: validate"] = time.time() - t
                if seed == seeds[0]:
                    sections.append("## Validation (rows in = kept + quarantined)\n\n" + format_summary(summaries))
            samples = log = None
            if needs_data:
                from crops_ray.engine.build import build_data
                from crops_ray.engine.build import format_summary as engine_summary
                from crops_ray.hla import load_samples

                if data_done:
                    step += 1
                    with open(f"{root}/data/stats.json") as f:
                        engine_stats = json.load(f)
                else:
                    stage(f"seed {seed}: building the CroPS data (P0-P3, HLA)")
                    t = time.time()
                    engine_stats = build_data(
                        f"{root}/validated",
                        f"{root}/data",
                        _engine_config(args.engine_config, seed),
                        eval_dir=f"{logs}/eval" if os.path.isdir(f"{logs}/eval") else None,
                    )
                    timings[f"seed {seed}: build data"] = time.time() - t
                if (
                    not reused
                ):  # a method still to train needs the samples, and P0 straight from the log (the baselines')
                    samples, _ = load_samples(f"{root}/data")
                    log, _ = load_samples(f"{root}/validated")
                if seed == seeds[0]:
                    sections.append("## The CroPS data engine (first seed)\n\n" + engine_summary(engine_stats))
            else:
                step += 1
            for name in methods:
                done = name in methods_done and (data_done or not METHODS[name].sources)
                stage(f"seed {seed}: {METHODS[name].label}" + (" (reused)" if done else ""))
                t = time.time()
                if done:
                    with open(f"{root}/{name}/result.json") as f:
                        results.append(json.load(f))
                    with method_run(tracking, METHODS[name], cfg, seed, reused=True) as reused_run:
                        log_result(reused_run, results[-1], f"{root}/{name}")
                    continue
                results.append(
                    run_method(METHODS[name], logs, samples, f"{root}/{name}", cfg, seed, log=log, tracking=tracking)
                )
                timings[f"seed {seed}: {name}"] = time.time() - t
            run.per_seed_ci[seed], run.per_seed_sparse_ci[seed], run.per_seed_additivity[seed] = seed_comparisons(
                root, methods, seed
            )
            if online:
                stage(f"seed {seed}: simulated online A/B test (Table 2)")
                t = time.time()
                run.online_by_seed[seed] = online_ab(
                    logs, root, methods, f"{root}/online", cfg, baseline="dpr", reuse=args.reuse
                )
                if not reused:
                    timings[f"seed {seed}: online A/B"] = time.time() - t

        run.summary = aggregate(run.results)
        report = write_report(run)
        log_report(tracking, run)
    if args.readme:
        total = timings["total"]
        note = (
            reuse_note(args.out, seeds, reused_seeds, partly_reused, total) if reused_seeds or partly_reused else None
        )
        update_readme(args.readme, readme_block(run, report), f"{args.out}/table1.png", total, note)
    print("\n" + report.table)
    print(f"\ndemo finished in {timings['total']:.0f}s; report: {args.out}/report.md")
    if tracking.uri:
        print(f"MLflow runs: {tracking.uri} (mlflow ui --backend-store-uri {tracking.uri})")
    return run.summary


if __name__ == "__main__":
    main()
