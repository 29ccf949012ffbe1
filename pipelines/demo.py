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
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crops_ray.config import load_config  # noqa: E402
from crops_ray.experiment import ABLATIONS, METHODS, TABLE1, ExperimentConfig, aggregate, plot_table1, run_method, side_by_side, table1_markdown  # noqa: E402
from crops_ray.validate import ValidationConfig, format_summary, validate_logs  # noqa: E402
from crops_ray.world.generator import format_stats, generate_world, world_config  # noqa: E402


def _engine_config(path: str | None, seed: int):
    from crops_ray.engine.build import EngineConfig

    cfg = load_config(EngineConfig, path)
    cfg.world_knowledge.seed = seed
    return cfg


START, END = "<!-- table1:start (written by pipelines/demo.py --readme) -->", "<!-- table1:end -->"


def update_readme(readme: str, table: str, timings: dict, chart: str) -> None:
    """Replace the block between the README's table1 markers with this run's table, chart and wall time."""
    import shutil

    with open(readme) as f:
        text = f.read()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: no '{START}' ... '{END}' block to replace")
    docs = os.path.join(os.path.dirname(os.path.abspath(readme)), "docs")
    os.makedirs(docs, exist_ok=True)
    shutil.copyfile(chart, os.path.join(docs, "table1.png"))
    block = "\n".join([START, table, "", "![Table 1](docs/table1.png)", "",
                        f"Wall time of the whole run on this machine: {timings['total'] / 60:.1f} min.", END])
    head, rest = text.split(START, 1)
    with open(readme, "w") as f:
        f.write(head + block + rest.split(END, 1)[1])


def by_query_kind(world: str, first: str, methods: list[str]) -> str:
    """Recall@100 CT and NDCG@4 per query kind (ambiguous word, sense, subtopic) per method, when the world says."""
    import pandas as pd
    import pyarrow.parquet as pq

    path = f"{world}/eval/queries.parquet"
    if not os.path.exists(path):
        return ""
    kinds = pq.read_table(path, columns=["query", "kind"]).to_pandas()
    rows = []
    for name in methods:
        run = next((p for p in (f"{first}/{name}/per_query.parquet", f"{first}/{name}/eval/per_query.parquet") if os.path.exists(p)), None)
        if run is None:
            continue
        per = pq.read_table(run, columns=["query", "recall@100_ct", "ndcg@4"]).to_pandas().merge(kinds, on="query")
        g = per.groupby("kind")[["recall@100_ct", "ndcg@4"]].mean()
        rows.append({"method": METHODS[name].label, **{f"{k} {c}": g.loc[k, c] for k in g.index for c in g.columns}})
    if not rows:
        return ""
    counts = kinds["kind"].value_counts()
    table = pd.DataFrame(rows).set_index("method")
    table.columns = [f"{c} ({counts.get(c.split()[0], 0)} q)" for c in table.columns]
    return table.to_markdown(floatfmt=".3f")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--logs", help="your log folder instead of the generated world")
    p.add_argument("--scale", default="small", help="world scale: tiny, small, large")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (world and training); 3 give mean and spread")
    p.add_argument("--ablations", action="store_true", help="add crops_p1, crops_p2, crops_p3, crops_binary")
    p.add_argument("--methods", help=f"comma-separated subset of {list(METHODS)}")
    p.add_argument("--max-steps", type=int, help="training steps per method")
    p.add_argument("--doc-tower", choices=("frozen", "train"), help="frozen (default: query-side fine-tuning, the corpus encoded once) or train (both towers, as the paper; several times slower on CPUs)")
    p.add_argument("--config", help="YAML of ExperimentConfig settings (train, groups, eval)")
    p.add_argument("--engine-config", help="YAML of the data engine's EngineConfig")
    p.add_argument("--readme", help="also write the table and chart into this README (between its table1 markers) and docs/")
    args = p.parse_args(argv)
    methods = args.methods.split(",") if args.methods else list(TABLE1) + (list(ABLATIONS) if args.ablations else [])
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    cfg = load_config(ExperimentConfig, args.config)
    if args.max_steps:
        cfg.train.max_steps = args.max_steps
    if args.doc_tower:
        cfg.train.doc_tower, cfg.train.shared_towers = args.doc_tower, args.doc_tower == "train"
    seeds = [int(s) for s in args.seeds.split(",")]
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    results, sections, timings = [], [], {}
    needs_data = any(METHODS[m].sources for m in methods)
    steps = len(seeds) * (3 + len(methods))
    step = 0

    def stage(what: str) -> None:
        nonlocal step
        step += 1
        print(f"\n[{step}/{steps}] {what}  ({time.time() - started:.0f}s)", flush=True)

    for seed in seeds:
        root = f"{args.out}/seed-{seed}"
        logs = args.logs
        if logs is None:
            logs = f"{root}/world"
            stage(f"seed {seed}: generating the {args.scale} world")
            t = time.time()
            stats = generate_world(logs, world_config(args.scale, seed=seed))
            timings[f"seed {seed}: generate"] = time.time() - t
            if seed == seeds[0]:
                sections.append("## The world (first seed)\n\n" + format_stats(stats))
        else:
            step += 1
        stage(f"seed {seed}: validating {logs}")
        t = time.time()
        summaries = validate_logs(logs, f"{root}/validated", ValidationConfig())
        timings[f"seed {seed}: validate"] = time.time() - t
        if seed == seeds[0]:
            sections.append("## Validation (rows in = kept + quarantined)\n\n" + format_summary(summaries))
        samples = log = None
        if needs_data:
            from crops_ray.engine.build import build_data, format_summary as engine_summary
            from crops_ray.hla import load_samples

            stage(f"seed {seed}: building the CroPS data (P0-P3, HLA)")
            t = time.time()
            engine_stats = build_data(f"{root}/validated", f"{root}/data", _engine_config(args.engine_config, seed), eval_dir=f"{logs}/eval" if os.path.isdir(f"{logs}/eval") else None)
            timings[f"seed {seed}: build data"] = time.time() - t
            samples, _ = load_samples(f"{root}/data")
            log, _ = load_samples(f"{root}/validated")  # P0 straight from the log: what the baselines train on
            if seed == seeds[0]:
                sections.append("## The CroPS data engine (first seed)\n\n" + engine_summary(engine_stats))
        else:
            step += 1
        for name in methods:
            stage(f"seed {seed}: {METHODS[name].label}")
            t = time.time()
            results.append(run_method(METHODS[name], logs, samples, f"{root}/{name}", cfg, seed, log=log))
            timings[f"seed {seed}: {name}"] = time.time() - t

    summary = aggregate(results)
    plot_table1(summary, methods, f"{args.out}/table1.png")
    table = table1_markdown(summary, methods)
    head = [f"## Table 1 on {'your logs' if args.logs else f'the {args.scale} world'} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}: {args.seeds})",
            "", "Percent; with several seeds, mean ± standard deviation.", "", table, "", "![Table 1](table1.png)"]
    sections.insert(0, "\n".join(head))
    first = f"{args.out}/seed-{seeds[0]}"
    world = args.logs or f"{first}/world"
    if os.path.exists(f"{world}/eval/video_truth.parquet"):
        from crops_ray.world.bubble import bubble_table, plot_bubble

        bubble = bubble_table(world)
        plot_bubble(bubble, f"{args.out}/filter_bubble.png")
        sections.append("## The filter bubble in the logs\n\nShare of minority-sense videos for requests that typed a bare ambiguous word.\n\n"
                        + bubble.to_markdown(index=False, floatfmt=".3f") + "\n\n![filter bubble](filter_bubble.png)")
        if {"dpr", "crops"} <= set(methods):
            words = list(bubble.sort_values("requests", ascending=False)["word"][:3])
            runs = {"DPR": f"{first}/dpr/eval/per_query.parquet", "CroPS": f"{first}/crops/eval/per_query.parquet"}
            sections.append("## DPR vs CroPS, top-10 for ambiguous queries\n\n✓ relevant in the qrels, ✗ not; the video's sense in italics.\n\n"
                            + side_by_side(world, runs, words))
    kinds = by_query_kind(world, first, methods)
    if kinds:
        sections.append("## By query kind (first seed)\n\nPer-query means from each method's `eval/per_query.parquet`; "
                        "the world's query kinds from `eval/queries.parquet`.\n\n" + kinds)
    timings["total"] = time.time() - started
    sections.append("## Time (this machine)\n\n| stage | seconds |\n|---|---:|\n" + "\n".join(f"| {k} | {v:.0f} |" for k, v in timings.items()))
    with open(f"{args.out}/report.md", "w") as f:
        f.write("# crops-ray: Table 1 report\n\n" + "\n\n".join(sections) + "\n")
    with open(f"{args.out}/metrics.json", "w") as f:
        json.dump({"methods": summary, "seeds": seeds, "runs": results, "seconds": timings}, f, indent=2, default=str)
    if args.readme:
        update_readme(args.readme, "\n".join(head[:-1]).replace("## ", "### ", 1), timings, f"{args.out}/table1.png")
    print("\n" + table)
    print(f"\ndemo finished in {timings['total']:.0f}s; report: {args.out}/report.md")
    return summary


if __name__ == "__main__":
    main()
