"""The end-to-end demo over its seeds: each seed's world, validation, data, methods and online test, then the report.

    settings = DemoSettings(out="runs/demo", seeds=[0], seeds_text="0", methods=list(TABLE1), cfg=ExperimentConfig())
    run, report = run_demo(settings)          # OUT/report.md, OUT/metrics.json, the charts; an MLflow run

Per seed (:func:`run_seed`): generate the world (unless ``logs``) -> validate -> build the CroPS data (P0-P3, HLA)
-> train and evaluate each method -> the paired comparisons -> the simulated online A/B test. Every stage is
numbered and timed by one :class:`StageClock`; with ``reuse``, what an earlier run under ``out`` finished
(:class:`Reuse`) is read back instead of run again.
"""

from __future__ import annotations

import glob
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from crops_ray.config import load_config
from crops_ray.experiment import METHODS, ExperimentConfig, aggregate, log_result, method_run, online_ab, run_method
from crops_ray.layout import LogsLayout, RunLayout, SeedLayout
from crops_ray.report.demo import DemoReport, DemoRun, SeedResult, seed_comparisons, write_report
from crops_ray.storage import SUCCESS_MARKER
from crops_ray.tracking import NO_RUN, Run, start_run
from crops_ray.validate import ValidationConfig, format_summary, validate_logs
from crops_ray.world.generator import format_stats, generate_world, world_config

# The CPU demo's data-engine settings (a YAML passed as engine_config applies on top): P3 on 4 queries (the CPU LLM
# is a stand-in for vLLM on a GPU), so that one seed fits 20 minutes on 2 cores.
DEMO_ENGINE = {"world_knowledge": {"max_queries": 4}}
ONLINE_BASELINE = "dpr"  # Table 2's relative changes are against DPR, as the paper's


@dataclass
class DemoSettings:
    """What the demo runs: where, on which logs and seeds, which methods, with which settings."""

    out: str
    seeds: list[int]
    seeds_text: str  # the seeds as the user gave them, for titles
    methods: list[str]
    cfg: ExperimentConfig
    logs: str | None = None  # your logs (None: a generated world per seed)
    scale: str = "small"  # the generated world's scale
    engine_config: str | None = None  # a YAML of the data engine's EngineConfig, over DEMO_ENGINE
    online_wanted: bool = True  # the simulated online A/B test, where the logs allow it
    reuse: bool = False  # read back what an earlier run under out finished

    @property
    def online(self) -> bool:
        """The online A/B test needs simulated users: a generated world (world.json), never a user's own logs."""
        return self.online_wanted and (self.logs is None or os.path.exists(LogsLayout(self.logs).world_json))

    @property
    def needs_data(self) -> bool:
        return any(METHODS[m].sources for m in self.methods)

    @property
    def stages(self) -> int:
        """Stages per seed: world, validation, data, each method, and the online test."""
        return 3 + len(self.methods) + self.online


class StageClock:
    """Numbers the demo's stages over all seeds (``[3/39] seed 0: ...``, with the seconds since the start)."""

    def __init__(self, total: int, progress=None):
        self.total, self.done, self.started = total, 0, time.time()
        self.progress = progress or (lambda message: print(message, flush=True))

    def stage(self, what: str | None) -> None:
        """The next stage; ``what`` None counts one with nothing to do (no world to generate, data read back)."""
        self.done += 1
        if what is not None:
            self.progress(f"\n[{self.done}/{self.total}] {what}  ({self.elapsed():.0f}s)")

    def elapsed(self) -> float:
        return time.time() - self.started


@contextmanager
def timed(seconds: dict[str, float], key: str | None):
    """Records the block's seconds as ``seconds[key]`` (nothing when ``key`` is None: work read back, not done)."""
    started = time.time()
    yield
    if key is not None:
        seconds[key] = time.time() - started


@dataclass(frozen=True)
class Reuse:
    """What an earlier run under ``--out`` finished for one seed, to be read back (nothing without ``--reuse``)."""

    world: bool = False  # the generated world (its world.json)
    data: bool = False  # the validated logs and the engine's data (its stats.json)
    methods: frozenset[str] = field(default_factory=frozenset)  # the methods with a result.json

    @classmethod
    def find(cls, seed: SeedLayout, methods: list[str]) -> Reuse:
        return cls(
            world=os.path.exists(seed.world.world_json),
            data=os.path.exists(seed.data.stats_json) and os.path.exists(f"{seed.validated}/{SUCCESS_MARKER}"),
            methods=frozenset(m for m in methods if os.path.exists(seed.method(m).result_json)),
        )

    def method(self, name: str) -> bool:
        """Whether ``name``'s result is read back: it is there, and so is the data it trained on (if any)."""
        return name in self.methods and (self.data or not METHODS[name].sources)

    def whole(self, methods: list[str]) -> bool:
        """Whether the whole seed is read back (the online test too reads its counts back)."""
        return self.data and self.methods == set(methods)


def run_demo(s: DemoSettings, progress=None) -> tuple[DemoRun, DemoReport]:
    """Every seed (:func:`run_seed`), the methods' mean over them, the report; one MLflow run (:func:`tracked`)."""
    clock = StageClock(len(s.seeds) * s.stages, progress)
    labels = {m: METHODS[m].label for m in s.methods}
    run = DemoRun(s.out, s.seeds, s.seeds_text, s.methods, labels, clock.started, s.logs, s.scale)
    run.online_skipped = s.online_wanted and not s.online
    os.makedirs(s.out, exist_ok=True)
    with tracked(s) as tracking:  # each (seed, method) a run nested in it (crops_ray.experiment.method_run)
        run.tracking_uri = tracking.uri
        run.by_seed = [run_seed(seed, s, clock, tracking) for seed in s.seeds]
        run.summary = aggregate(run.results)
        report = write_report(run)
        log_report(tracking, run)
    return run, report


def tracked(s: DemoSettings) -> Run:
    """The demo's MLflow run: its logs, scale, seeds and methods as tags and params, the experiment's settings."""
    return start_run(
        s.out,
        f"demo {s.logs or s.scale} seeds {s.seeds_text}",
        tags={"pipeline": "demo", "scale": s.scale, "seeds": s.seeds_text, "methods": ",".join(s.methods)},
        params={"logs": s.logs or "generated", "scale": s.scale, "seeds": s.seeds_text, "experiment": asdict(s.cfg)},
    )


def log_report(tracking: Run, run: DemoRun) -> None:
    """Each method's mean over the seeds as ``METHOD.METRIC`` metrics; the report, metrics.json and charts as
    artifacts."""
    tracking.log_metrics({f"{m}.{k}": v for m, row in run.summary.items() for k, v in row.items()})
    layout = run.layout
    for path in [layout.report_md, layout.metrics_json, *sorted(glob.glob(f"{layout.root}/*.png"))]:
        tracking.log_artifact(path)


def run_seed(seed: int, s: DemoSettings, clock: StageClock, tracking: Run = NO_RUN) -> SeedResult:
    """One seed, each stage read back where ``s.reuse`` finds it finished (:class:`Reuse`)."""
    folder = RunLayout(s.out).seed(seed)
    reuse = Reuse.find(folder, s.methods) if s.reuse else Reuse()
    whole = reuse.whole(s.methods)
    result = SeedResult(seed, reused=whole, read_back=[] if whole else sorted(reuse.methods))
    work = SeedRun(s, folder, reuse, clock, tracking, result)
    work.logs = work.world()
    work.validate()
    samples, log = work.data()
    result.results = [work.method(name, samples, log) for name in s.methods]
    result.ci, result.sparse_ci, result.additivity = seed_comparisons(folder.root, s.methods, seed)
    if s.online:
        result.online = work.online()
    return result


@dataclass
class SeedRun:
    """The stages of one seed, each adding to ``result`` (its sections, seconds, results)."""

    s: DemoSettings
    folder: SeedLayout
    reuse: Reuse
    clock: StageClock
    tracking: Run
    result: SeedResult
    logs: str = ""  # the logs the seed runs on: the user's, or its generated world

    @property
    def seed(self) -> int:
        return self.result.seed

    def stage(self, what: str | None, reused: bool = False) -> None:
        self.clock.stage(None if what is None else f"seed {self.seed}: {what}" + (" (reused)" if reused else ""))

    def timed(self, what: str, reused: bool = False):
        """Times a stage that runs now as "seed S: what" (one read back is not timed)."""
        return timed(self.result.seconds, None if reused else f"seed {self.seed}: {what}")

    def world(self) -> str:
        """``s.logs``, or the seed's generated world (made now, or read back)."""
        if self.s.logs is not None:
            self.stage(None)
            return self.s.logs
        world = self.folder.world
        self.stage(f"generating the {self.s.scale} world")
        if self.reuse.world:
            with open(world.world_json) as f:
                stats = json.load(f)["stats"]
        else:
            with self.timed("generate"):
                stats = generate_world(world.root, world_config(self.s.scale, seed=self.seed))
        self.result.sections.append("## The world (first seed)\n\n" + format_stats(stats))
        return world.root

    def validate(self) -> None:
        self.stage(f"validating {self.logs}", reused=self.reuse.data)
        if self.reuse.data:
            return
        with self.timed("validate"):
            summaries = validate_logs(self.logs, self.folder.validated, ValidationConfig())
        self.result.sections.append("## Validation (rows in = kept + quarantined)\n\n" + format_summary(summaries))

    def data(self) -> tuple:
        """The engine's samples and the P0 samples straight from the log, for the methods still to train (None,
        None when none is left to train, or none trains)."""
        if not self.s.needs_data:
            self.stage(None)
            return None, None
        from crops_ray.engine.build import format_summary as engine_summary
        from crops_ray.hla import load_samples

        if self.reuse.data:
            self.stage(None)
            with open(self.folder.data.stats_json) as f:
                stats = json.load(f)
        else:
            self.stage("building the CroPS data (P0-P3, HLA)")
            with self.timed("build data"):
                stats = self.build_data()
        self.result.sections.append("## The CroPS data engine (first seed)\n\n" + engine_summary(stats))
        if self.result.reused:
            return None, None
        return load_samples(self.folder.data.root)[0], load_samples(self.folder.validated)[0]

    def build_data(self) -> dict:
        from crops_ray.engine.build import EngineConfig, build_data

        cfg = load_config(EngineConfig, self.s.engine_config, defaults=DEMO_ENGINE)
        cfg.world_knowledge.seed = self.seed
        test_sets = LogsLayout(self.logs).eval
        eval_dir = test_sets if os.path.isdir(test_sets) else None
        return build_data(self.folder.validated, self.folder.data.root, cfg, eval_dir=eval_dir)

    def method(self, name: str, samples, log) -> dict:
        """One method's result.json: trained and evaluated now, or read back and logged as a reused run."""
        method, cfg, out = METHODS[name], self.s.cfg, self.folder.method(name)
        read_back = self.reuse.method(name)
        self.stage(method.label, reused=read_back)
        if not read_back:
            with self.timed(name):
                return run_method(method, self.logs, samples, out.root, cfg, self.seed, log=log, tracking=self.tracking)
        with open(out.result_json) as f:
            done = json.load(f)
        with method_run(self.tracking, method, cfg, self.seed, reused=True) as reused_run:
            log_result(reused_run, done, out.root)
        return done

    def online(self) -> tuple:
        """The simulated online A/B test (Table 2): experiment.online_ab's (summary, table)."""
        self.stage("simulated online A/B test (Table 2)")
        with self.timed("online A/B", reused=self.result.reused):
            return online_ab(
                self.logs,
                self.folder.root,
                self.s.methods,
                self.folder.online.root,
                self.s.cfg,
                baseline=ONLINE_BASELINE,
                reuse=self.s.reuse,
            )
