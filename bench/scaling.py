"""How cost grows with the logs, measured; and the cost at the paper's scale, from the measured slopes.

    .venv/bin/python bench/scaling.py measure --out runs/scaling          # tiny, small, medium: ~1 h on 2 cores
    .venv/bin/python bench/scaling.py plan --measured runs/scaling > docs/scaling.md

``measure`` runs, for each world scale in its own process (its own local Ray, so each driver's memory is its
own): the world's generation (not part of the system; timed apart), ``validate``, ``build_data`` stage by stage
(configs/engine.yaml; P3 prompts a fixed number of queries at every scale, ``--llm-queries``, since its cost is set
by the prompts, not the logs), the training groups on Ray Data (pipelines/train.py's path), one epoch of the demo's
CroPS training on them, and the same groups built by the driver in memory (the experiment's path). Each step
records its seconds and the peak resident memory of the driver, of Ray's workers (in all and the largest) and of
Ray's own processes, sampled every 0.2 s. medium is small's catalog with 10x its users (so about 10x its logs).
``plan`` prints how each stage's seconds per million log rows move from small to medium (the target: flat within
1.5x) and where the driver's memory grows, then the hours per stage at the paper's scale, extrapolated from the
largest measured scale's per-core rates.

GPU throughput was not measured (no GPU was lent to the sessions that built this): GPU-hours are the measured
per-core CPU throughput times an assumed GPU/core speed-up per stage (``--gpu-speedup-*``), printed as such.
Rerun with measured GPU numbers (``bench/engine.py`` and ``bench/train.py`` on a GPU node) to replace them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# ------------------------------------------------------------------------------------------- measure


class MemoryWatch:
    """Peak resident memory of this process (the driver) and of Ray's processes, sampled every ``every`` s.

    Ray's processes are this process's descendants (a local Ray): workers carry a ``ray::`` process title
    (tasks, actors, idle workers kept for the next stage), the rest (raylet, GCS, log monitor) are Ray's own.
    RSS counts the object store's shared pages in every process that touched them, so the worker total is an
    upper bound. :meth:`take` returns the peaks since the last call and starts a new segment.
    """

    def __init__(self, every: float = 0.2):
        import psutil

        self._me, self._psutil, self.every = psutil.Process(), psutil, every
        self._peaks = self._zero()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _zero() -> dict:
        return {"driver_mb": 0.0, "workers_mb": 0.0, "largest_worker_mb": 0.0, "ray_system_mb": 0.0}

    def _sample(self) -> dict:
        mb = 1 / 2**20
        now = {"driver_mb": self._me.memory_info().rss * mb, "workers_mb": 0.0, "largest_worker_mb": 0.0}
        system = 0.0
        for p in self._me.children(recursive=True):
            try:
                rss, title = p.memory_info().rss * mb, (p.cmdline() or [""])[0]
            except self._psutil.Error:  # gone between the listing and the read
                continue
            if title.startswith("ray::"):
                now["workers_mb"] += rss
                now["largest_worker_mb"] = max(now["largest_worker_mb"], rss)
            else:
                system += rss
        now["ray_system_mb"] = system
        return now

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            now = self._sample()
            with self._lock:
                self._peaks = {k: max(v, now[k]) for k, v in self._peaks.items()}

    def take(self) -> dict:
        now = self._sample()
        with self._lock:
            peaks, self._peaks = {k: round(max(v, now[k]), 1) for k, v in self._peaks.items()}, self._zero()
        return peaks

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _stage_segments(watch: MemoryWatch, memory: dict):
    """A progress callback for build_data: the engine's clock prints ``[n/total] what`` when a stage starts and
    ``      NAME: 12.3s`` when it ends, so the memory peaks between the two are stage NAME's."""

    def progress(line: str) -> None:
        print(line, flush=True)
        if line.startswith("["):  # a stage starts: what came before it (the calibration, a fixed cost) is not its
            watch.take()
            return
        name, sep, rest = line.strip().partition(": ")
        if sep and rest.endswith("s") and name.isidentifier() and line.startswith("      "):
            try:
                float(rest[:-1])
            except ValueError:
                return
            memory[name] = watch.take()

    return progress


def _groups_steps(root: str, watch: MemoryWatch, seconds: dict, memory: dict, train_epoch: bool) -> dict:
    """The training groups as pipelines/train.py builds them (Ray Data), one epoch of the demo's CroPS training on
    them (query-side fine-tuning, H-InfoNCE), then the same groups built by the driver in memory (build_groups, the
    experiment's path), last so that what the driver kept does not count against the steps before. Returns the
    work done: groups, samples and (with ``train_epoch``) training steps."""
    from crops_ray.experiment import ExperimentConfig
    from crops_ray.hla import build_groups, load_samples, samples_files, write_groups
    from crops_ray.train import train
    from crops_ray.train.groups import write_groups_dataset

    gcfg = ExperimentConfig().groups
    work: dict[str, int] = {}
    started = time.perf_counter()
    work["groups"] = write_groups_dataset(samples_files(f"{root}/data"), f"{root}/crops/groups", gcfg)
    seconds["groups"] = time.perf_counter() - started
    memory["groups"] = watch.take()
    if train_epoch:
        shutil.rmtree(f"{root}/crops/checkpoints", ignore_errors=True)  # a run there would be resumed, not measured
        tcfg = dataclasses.replace(ExperimentConfig().train, max_steps=0, epochs=1.0, checkpoint_every=10**6)
        metrics = train(f"{root}/crops/groups", f"{root}/crops", tcfg)
        seconds["train_epoch"], work["train_steps"] = metrics["wall_s"], metrics["steps"]
        memory["train_epoch"] = watch.take()
    started = time.perf_counter()
    samples, _ = load_samples(f"{root}/data")
    work["samples"] = samples.num_rows
    write_groups(build_groups(samples, gcfg), f"{root}/groups-driver")
    seconds["groups_driver"] = time.perf_counter() - started
    memory["groups_driver"] = watch.take()
    return work


def _engine_step(root: str, watch: MemoryWatch, seconds: dict, memory: dict, llm_queries: int) -> dict:
    """build_data over the validated logs, stage by stage (configs/engine.yaml, P3 on ``llm_queries`` queries)."""
    from crops_ray.config import from_dict, read_yaml
    from crops_ray.engine.build import EngineConfig, build_data

    cfg = from_dict(EngineConfig, read_yaml(os.path.join(REPO, "configs", "engine.yaml")))
    cfg.world_knowledge.max_queries = llm_queries
    stats = build_data(f"{root}/validated", f"{root}/data", cfg, progress=_stage_segments(watch, memory))
    seconds.update({name: s for name, s in stats["seconds"].items() if name != "total"})
    return stats


def redo(scale: str, out: str, steps: list[str], llm_queries: int) -> dict:
    """Measure some steps again on a measured scale's logs (after a change to them), in place: ``engine``
    (build_data's stages), then always the groups (they read its samples), and ``train`` (the epoch)."""
    from crops_ray.runtime import init_ray

    root, path = os.path.join(out, scale), os.path.join(out, scale, "measured.json")
    record = _load(path)
    init_ray()
    watch = MemoryWatch()
    seconds: dict = {}
    memory: dict = {"ray_start": watch.take()}
    if "engine" in steps:
        stats = _engine_step(root, watch, seconds, memory, llm_queries)
        record["work"]["pairs_scored"] = stats["discriminator"]["mined_pairs_scored"]
        record["work"]["llm_prompts"] = stats["llm"]["calls"]
    record["work"].update(_groups_steps(root, watch, seconds, memory, train_epoch="train" in steps))
    watch.close()
    for step, value in seconds.items():
        record["seconds"][step] = round(value, 2)
        record["memory_mb"][step] = memory[step]
    record["redone"] = sorted(set(record.get("redone", [])) | set(seconds))
    record["load_before_redo"] = os.getloadavg()[0]
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    return record


def measure_one(scale: str, out: str, seed: int, llm_queries: int) -> dict:
    """Generate the ``scale`` world, then validate, build_data and one training epoch over it, timed and watched.

    Writes OUT/SCALE/{world,validated,data,crops} and OUT/SCALE/measured.json; returns the record.
    """
    from crops_ray.runtime import init_ray
    from crops_ray.validate import validate_logs
    from crops_ray.world.generator import generate_world, world_config

    load = os.getloadavg()[0]
    root = os.path.join(out, scale)
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    started = time.perf_counter()
    world = generate_world(f"{root}/world", world_config(scale, seed=seed), use_ray=False)
    world_s = time.perf_counter() - started

    init_ray()
    watch = MemoryWatch()
    seconds: dict[str, float] = {}
    memory: dict[str, dict] = {"ray_start": watch.take()}

    started = time.perf_counter()
    summaries = validate_logs(f"{root}/world", f"{root}/validated")
    seconds["validate"] = time.perf_counter() - started
    memory["validate"] = watch.take()
    rows = {t: s.rows_in for t, s in summaries.items()}

    stats = _engine_step(root, watch, seconds, memory, llm_queries)
    work = _groups_steps(root, watch, seconds, memory, train_epoch=True)
    watch.close()

    record = {
        "scale": scale,
        "seed": seed,
        "users": world["users"],
        "world_seconds": round(world_s, 1),
        "rows": rows,
        "log_rows": rows["search_log"] + rows["rec_log"],
        "work": {
            "pairs_scored": stats["discriminator"]["mined_pairs_scored"],
            "llm_prompts": stats["llm"]["calls"],
            **work,
        },
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "memory_mb": memory,
        "cpus": os.cpu_count(),
        "load_before": load,
    }
    with open(f"{root}/measured.json", "w") as f:
        json.dump(record, f, indent=2)
    return record


# ---------------------------------------------------------------------------------------------- plan


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def measured(folder: str) -> dict:
    """Per-core throughputs from one measured scale (``OUT/SCALE``: data/stats.json, crops/train_metrics.json)."""
    stats_path, train_path = f"{folder}/data/stats.json", f"{folder}/crops/train_metrics.json"
    for path in (stats_path, train_path):
        if not os.path.exists(path):
            raise SystemExit(f"{path}: missing (run `bench/scaling.py measure` first)")
    stats, tm = _load(stats_path), _load(train_path)
    cores = stats.get("cluster", {}).get("cpus") or os.cpu_count()
    sec = stats["seconds"]
    search_rows = stats["rows_read"]["search_log"]
    rows_all = sum(stats["rows_read"].values())
    llm = stats["llm"]
    kept_llm = stats["sources"]["llm"]["kept"]
    return {
        "source": folder,
        "cores": cores,
        "search_rows": search_rows,
        "log_rows_per_search_row": rows_all / search_rows,
        # mining: the users and pairs stages (two shuffles) over every log row
        "mining_rows_per_core_s": rows_all / max(1e-9, sec.get("users", 0) + sec.get("pairs", 0)) / cores,
        "pairs_scored_per_search_row": stats["discriminator"]["mined_pairs_scored"] / search_rows,
        "pairs_per_core_s": stats["discriminator"]["mined_pairs_scored"] / max(1e-9, sec["score"]) / cores,
        "tokens_per_call": llm["generated_tokens"] / max(1, llm["calls"]),
        "kept_per_call": kept_llm / max(1, llm["calls"]),
        "tokens_per_core_s": llm["generated_tokens"] / max(1e-9, sec.get("llm_generate", 0)) / cores
        if llm["calls"]
        else float("nan"),
        "samples_per_search_row": stats["samples"]["rows"] / search_rows,
        "train_groups_per_s": tm["samples_per_s"],
        "train_workers": tm["num_workers"],
        "train_doc_tower": tm["config"].get("doc_tower", "train"),
    }


def plan(m: dict, args) -> list[dict]:
    """Hours per stage at scale: CPU core-hours from the measured rates, GPU-hours with the assumed speed-ups."""
    rows = args.search_rows
    pairs = rows * m["pairs_scored_per_search_row"]
    calls = args.synthetic_positives / max(1e-9, m["kept_per_call"])
    tokens = calls * m["tokens_per_call"]
    samples = rows * m["samples_per_search_row"]
    groups = samples / args.samples_per_group * args.epochs
    train_core_s = groups / (m["train_groups_per_s"] / m["cores"])
    stages = [
        (
            "mine P1/P2 candidates (Ray Data shuffles)",
            f"{rows * m['log_rows_per_search_row']:.3g} log rows (search + rec, this run's ratio)",
            rows * m["log_rows_per_search_row"] / m["mining_rows_per_core_s"],
            None,
        ),
        (
            "discriminator over mined pairs",
            f"{pairs:.3g} pairs",
            pairs / m["pairs_per_core_s"],
            args.gpu_speedup_encoder,
        ),
        ("LLM descriptions (P3)", f"{calls:.3g} prompts, {tokens:.3g} tokens", tokens / m["tokens_per_core_s"], None),
        (
            "training (H-InfoNCE)"
            + (", query tower (document tower frozen, as measured)" if m["train_doc_tower"] == "frozen" else ""),
            f"{groups:.3g} groups",
            train_core_s,
            args.gpu_speedup_train,
        ),
    ]
    out = []
    for name, work, core_s, speedup in stages:
        core_h = core_s / 3600
        if name.startswith("LLM"):
            gpu_h = tokens / args.vllm_tokens_per_gpu_s / 3600
        elif speedup:
            gpu_h = core_h / speedup
        else:
            gpu_h = None
        out.append({"stage": name, "work": work, "core_hours": core_h, "gpu_hours": gpu_h})
    return out


# Each measured step, the unit of its own work (None: per log row only) and what that unit is.
STEPS = [
    ("validate", None, "every log row checked, kept or quarantined"),
    ("users", None, "P1/P2 mining: one shuffle of the search and rec logs by user"),
    ("pairs", None, "one shuffle by video: (query, video) pairs with text"),
    ("score", "pairs_scored", "the discriminator over the mined pairs"),
    ("llm_generate", "llm_prompts", "P3 descriptions (a fixed number of prompts)"),
    ("llm_verify", "llm_prompts", "P3 quality control and theta"),
    ("assemble", "samples", "HLA samples"),
    ("groups", "groups", "training groups built by Ray Data (pipelines/train.py's path)"),
    ("train_epoch", "groups", "one epoch of CroPS training (Ray Train)"),
    ("groups_driver", "groups", "the same groups built by the driver in memory (the experiment's path)"),
]
UNITS = {"pairs_scored": "pair scored", "llm_prompts": "prompt", "samples": "sample", "groups": "group"}
MEMORY = [("driver_mb", "driver"), ("workers_mb", "Ray workers, all"), ("largest_worker_mb", "largest worker")]


def load_records(out: str) -> list[dict]:
    """The measured.json of every scale under ``out``, smallest logs first."""
    records = []
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name, "measured.json")
        if os.path.exists(path):
            records.append(_load(path))
    if not records:
        raise SystemExit(f"{out}: no SCALE/measured.json (run `bench/scaling.py measure --out {out}` first)")
    return sorted(records, key=lambda r: r["log_rows"])


def growth(records: list[dict]) -> list[str]:
    """Markdown: seconds per million log rows (and per unit of each step's own work) by scale, the last two
    scales' ratio, and the peak memory of each step."""
    names = [r["scale"] for r in records]
    a, b = records[-2:] if len(records) > 1 else (records[0], records[0])
    lines = [
        "## How cost grows with the logs (measured)",
        "",
        "| scale | users | log rows (search + rec) | search-log rows | pairs scored | LLM prompts | samples | groups |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        w = r["work"]
        lines.append(
            f"| {r['scale']} | {r['users']:,} | {r['log_rows']:,} | {r['rows']['search_log']:,} | "
            f"{w['pairs_scored']:,} | {w['llm_prompts']:,} | {w['samples']:,} | {w['groups']:,} |"
        )
    lines += [
        "",
        f"Seconds per million log rows, and the ratio {b['scale']} / {a['scale']} (1.0: cost grows exactly with "
        "the logs; the target is within 1.5x). Where a step's work is not the log rows, the last columns give "
        "its cost per unit of its own work.",
        "",
        "| step | what | "
        + " | ".join(f"{n} s" for n in names)
        + " | "
        + " | ".join(f"{n} s / M rows" for n in names)
        + f" | {b['scale']} / {a['scale']} per row | "
        f"per unit of own work ({a['scale']} -> {b['scale']}) |",
        "|---|---|" + "---:|" * (2 * len(names) + 2),
    ]
    for step, unit, what in STEPS:
        if not all(step in r["seconds"] for r in records):
            continue
        secs = [r["seconds"][step] for r in records]
        per_row = [s / (r["log_rows"] / 1e6) for s, r in zip(secs, records)]
        ratio = per_row[-1] / per_row[-2] if len(records) > 1 and per_row[-2] > 0 else float("nan")
        own = "-"
        if unit and a["work"][unit] and b["work"][unit]:
            ua, ub = a["seconds"][step] / a["work"][unit], b["seconds"][step] / b["work"][unit]
            own = f"{ua * 1e3:,.2f} -> {ub * 1e3:,.2f} ms per {UNITS[unit]} ({ub / ua:.2f}x)"
        lines.append(
            f"| {step} | {what} | "
            + " | ".join(f"{s:,.1f}" for s in secs)
            + " | "
            + " | ".join(f"{x:,.1f}" for x in per_row)
            + f" | {ratio:.2f} | {own} |"
        )
    lines += [
        "",
        "Peak resident memory (MB) of each step: the driver, Ray's workers together (idle workers kept between "
        "stages included; shared object-store pages counted in each process) and the largest worker.",
        "",
        "| step | " + " | ".join(f"{label} ({n})" for label_key, label in MEMORY for n in names) + " |",
        "|---|" + "---:|" * (len(MEMORY) * len(names)),
    ]
    for step in ["validate"] + [s for s, _, _ in STEPS if s != "validate"]:
        if not all(step in r["memory_mb"] for r in records):
            continue
        cells = [f"{r['memory_mb'][step][key]:,.0f}" for key, _ in MEMORY for r in records]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    loads = ", ".join(f"{r['scale']} {r['load_before']:.1f}" for r in records)
    lines += [
        "",
        f"Machine: {records[-1]['cpus']} cores; 1-minute load average when each scale started: {loads}. "
        f"Generating the worlds (a stand-in for the platform's logs, not part of the system) took "
        + ", ".join(f"{r['scale']} {r['world_seconds']:.0f} s" for r in records)
        + ".",
        "",
    ]
    return lines


def report(m: dict, rows: list[dict], args, records: list[dict]) -> str:
    lines = [
        "# Scaling: measured growth, and the paper's scale on paper",
        "",
        f"Generated by `bench/scaling.py plan --measured {args.measured}` from `bench/scaling.py measure`; "
        "do not edit by hand.",
        "",
        *growth(records),
        f"## Per-core rates at the largest measured scale ({records[-1]['scale']})",
        "",
        "| throughput | value | from |",
        "|---|---:|---|",
        (
            f"| log rows mined per core-second (users + pairs shuffles) | {m['mining_rows_per_core_s']:,.0f} | "
            "data/stats.json |"
        ),
        (
            f"| discriminator pairs per core-second (bi-encoder, texts cached) | {m['pairs_per_core_s']:,.1f} | "
            "data/stats.json |"
        ),
        f"| LLM tokens per core-second (SmolLM2-135M, CPU) | {m['tokens_per_core_s']:,.2f} | data/stats.json |",
        (
            f"| LLM tokens per prompt / synthetic positives kept per prompt | {m['tokens_per_call']:.1f} / "
            f"{m['kept_per_call']:.3f} | data/stats.json |"
        ),
        f"| discriminator pairs per search-log row | {m['pairs_scored_per_search_row']:.3f} | data/stats.json |",
        f"| training samples per search-log row | {m['samples_per_search_row']:.3f} | data/stats.json |",
        (
            f"| training groups/s ({m['train_workers']} worker(s), {m['cores']} cores, document tower: "
            f"{m['train_doc_tower']}) | {m['train_groups_per_s']:.1f} | crops/train_metrics.json |"
        ),
        "",
        "## The workload at the paper's scale",
        "",
        "| input | value | source |",
        "|---|---:|---|",
        f"| synthetic positives (P3) | {args.synthetic_positives:,.0f} | the paper |",
        (
            f"| search-log rows in the mining window | {args.search_rows:,.0f} | assumption (hundreds of millions of "
            "users; replace with yours) |"
        ),
        f"| samples per training group / epochs | {args.samples_per_group} / {args.epochs} | assumption |",
        (
            f"| GPU speed-up over one CPU core: encoder inference / training | {args.gpu_speedup_encoder:g} / "
            f"{args.gpu_speedup_train:g} | assumption (not measured here) |"
        ),
        (
            f"| vLLM generated tokens/s per GPU (14B model) | {args.vllm_tokens_per_gpu_s:,.0f} | assumption (not "
            "measured here) |"
        ),
        "",
        "## Hours per stage",
        "",
        "| stage | work | CPU core-hours (measured rate) | GPU-hours (assumed speed-up) |",
        "|---|---|---:|---:|",
    ]
    for r in rows:
        gpu = f"{r['gpu_hours']:,.0f}" if r["gpu_hours"] is not None else "- (CPU stage)"
        lines.append(f"| {r['stage']} | {r['work']} | {r['core_hours']:,.0f} | {gpu} |")
    gpu_rows = [r for r in rows if r["gpu_hours"]]
    top = max(gpu_rows, key=lambda r: r["gpu_hours"])
    cpu_top = max(rows, key=lambda r: r["core_hours"])
    nodes = args.gpu_nodes
    lines += [
        "",
        "## What it implies",
        "",
        (
            f"- On CPUs alone the largest stage is **{cpu_top['stage']}** ({cpu_top['core_hours']:,.0f} core-hours): "
            f"{cpu_top['core_hours'] / (args.cpu_nodes * args.cores_per_cpu_node):,.1f} h on {args.cpu_nodes} CPU "
            f"nodes of {args.cores_per_cpu_node} cores."
        ),
        (
            f"- With GPUs the bottleneck {'stays with' if top is cpu_top else 'moves to'} **{top['stage']}** "
            f"({top['gpu_hours']:,.0f} GPU-hours): {top['gpu_hours'] / nodes:,.1f} h on {nodes} single-GPU workers "
            "(the `gpu` worker type of `cluster.yaml`, max_workers raised)."
        ),
        (
            "- The mining shuffles stay on CPU workers and scale with log rows; the discriminator and training scale "
            "with GPUs; P3 is bounded by the LLM's generated tokens, so its cost is set by the number of synthetic "
            "positives wanted and the share that survives quality control (measured above)."
        ),
        (
            "- Every GPU number above rests on the assumed speed-ups in the table; measure them on one GPU node "
            "before sizing a cluster."
        ),
        (
            "- The P3 row uses the keep rate of the CPU demo's 135M-parameter LLM, which follows the one-shot prompt "
            "loosely; a 14B model keeps a larger share, which divides that row's hours by the same factor."
        ),
        (
            "- Training with both towers (the paper's setting) costs several times the measured query-tower rate; the "
            "paper reports 88 h for its H-InfoNCE run."
        ),
    ]
    return "\n".join(lines) + "\n"


def measure(args) -> None:
    """Each scale in a process of its own (its own Ray and driver), one after the other."""
    for scale in [s.strip() for s in args.scales.split(",") if s.strip()]:
        print(f"=== {scale} ===", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "one", "--scale", scale, "--out", args.out]
        cmd += ["--seed", str(args.seed), "--llm-queries", str(args.llm_queries)]
        subprocess.run(cmd, check=True)
    print("\n".join(growth(load_records(args.out))))


def main(argv=None) -> str | None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="measure every scale (each in its own process)")
    m.add_argument("--out", default="runs/scaling")
    m.add_argument("--scales", default="tiny,small,medium")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--llm-queries", type=int, default=40, help="queries prompted for P3 at every scale")
    one = sub.add_parser("one", help="measure one scale in this process")
    one.add_argument("--scale", required=True)
    one.add_argument("--out", required=True)
    one.add_argument("--seed", type=int, default=0)
    one.add_argument("--llm-queries", type=int, default=40)
    one.add_argument("--redo", help="comma-separated: engine, groups, train; measured again in place")
    pl = sub.add_parser("plan", help="the measured growth and the hours per stage at the paper's scale")
    pl.add_argument("--measured", default="runs/scaling", help="the folder `measure` wrote")
    pl.add_argument("--synthetic-positives", type=float, default=35e6, help="the paper: 35 M")
    pl.add_argument(
        "--search-rows", type=float, default=2e10, help="search-log rows (request x candidate) in the mining window"
    )
    pl.add_argument("--samples-per-group", type=int, default=8)
    pl.add_argument("--epochs", type=float, default=1.0)
    pl.add_argument(
        "--gpu-speedup-encoder",
        type=float,
        default=100.0,
        help="assumed: one GPU vs one CPU core, MiniLM-class inference",
    )
    pl.add_argument(
        "--gpu-speedup-train", type=float, default=60.0, help="assumed: one GPU vs one CPU core, encoder training"
    )
    pl.add_argument(
        "--vllm-tokens-per-gpu-s", type=float, default=2000.0, help="assumed: a 14B model on one 48 GB GPU, batched"
    )
    pl.add_argument("--gpu-nodes", type=int, default=16)
    pl.add_argument("--cpu-nodes", type=int, default=8)
    pl.add_argument("--cores-per-cpu-node", type=int, default=16)
    args = p.parse_args(argv)
    if args.command == "measure":
        return measure(args)
    if args.command == "one":
        if args.redo:
            redo(args.scale, args.out, args.redo.split(","), args.llm_queries)
        else:
            measure_one(args.scale, args.out, args.seed, args.llm_queries)
        return None
    records = load_records(args.measured)
    rates = measured(os.path.join(args.measured, records[-1]["scale"]))
    text = report(rates, plan(rates, args), args, records)
    print(text)
    return text


if __name__ == "__main__":
    main()
