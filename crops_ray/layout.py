"""Where a run's outputs lie: the folders the pipelines write and read, each file name spelled once here.

    run = RunLayout("runs/demo")
    run.seed(0).method("crops").model          # runs/demo/seed-0/crops/model
    run.seed(0).data.stats_json                # runs/demo/seed-0/data/stats.json

A demo's ``--out`` (:class:`RunLayout`) holds one folder per seed (:class:`SeedLayout`): the generated world
(:class:`LogsLayout`), the validated logs, the data engine's output (:class:`DataLayout`), one folder per method
(:class:`MethodLayout`, its evaluation an :class:`EvalLayout`), the sparse methods' common start and the online
A/B test (:class:`OnlineLayout`). A sweep's alpha or level-map folder holds its method folders the same way, so
it is a :class:`SeedLayout` too. Paths are joined with ``/`` as given (a URI stays a URI).
"""

from __future__ import annotations

from dataclasses import dataclass

STATS_JSON = "stats.json"  # the data engine's statistics (crops_ray.engine.build)
RESULT_JSON = "result.json"  # a method's Table-1 result (crops_ray.experiment.run_method)
METRICS_JSON = "metrics.json"  # an evaluation's numbers (crops_ray.evaluate), or the demo's over its seeds
PER_QUERY = "per_query.parquet"  # an evaluation's per-query hits (crops_ray.evaluate)
INDEX_JSON = "index.json"  # an index's settings and audit (crops_ray.index)
WORLD_JSON = "world.json"  # a generated world's config and stats (crops_ray.world.generator)
ONLINE_COUNTS = "online_counts.parquet"  # the online A/B test's counts per user and arm
ONLINE_JSON = "online.json"  # the online A/B test's summary
VALIDATION_JSON = "validation.json"  # validated logs' summary: rows in, kept, quarantined (crops_ray.validate)
TRAIN_METRICS_JSON = "train_metrics.json"  # a training run's numbers (crops_ray.train.driver)
INDEX_IDS = (
    "ids.parquet"  # an index's video ids, row i of the index is ids[i] (crops_ray.index, crops_ray.sparse.index)
)
FAISS_INDEX = "index.faiss"  # a dense index's vectors (crops_ray.index)
SPARSE_POSTINGS = "postings.npz"  # a sparse index's posting lists (crops_ray.sparse.index)
SPARSE_INIT = "sparse_init"  # CSR's heads fitted on the corpus: the sparse methods' common start


@dataclass(frozen=True)
class LogsLayout:
    """A log folder, generated or your own: videos/, search_log/, rec_log/, the test sets in eval/ and, for a
    generated world, world.json."""

    root: str

    @property
    def eval(self) -> str:
        return f"{self.root}/eval"

    @property
    def world_json(self) -> str:
        return f"{self.root}/{WORLD_JSON}"

    @property
    def queries(self) -> str:
        """The test queries with their bucket and (a generated world's) kind."""
        return f"{self.eval}/queries.parquet"

    @property
    def qrels(self) -> str:
        return f"{self.eval}/qrels.parquet"

    @property
    def video_truth(self) -> str:
        """A generated world's truth about each video (its word and sense)."""
        return f"{self.eval}/video_truth.parquet"


@dataclass(frozen=True)
class DataLayout:
    """A build_data output: the samples, every mined candidate, P3's descriptions, the statistics, and (with
    ``--validate``) the validated logs."""

    root: str

    @property
    def stats_json(self) -> str:
        return f"{self.root}/{STATS_JSON}"

    @property
    def samples(self) -> str:
        return f"{self.root}/samples"

    @property
    def candidates(self) -> str:
        return f"{self.root}/candidates"

    @property
    def llm_descriptions(self) -> str:
        return f"{self.root}/llm_descriptions"

    @property
    def validated(self) -> str:
        return f"{self.root}/validated"


@dataclass(frozen=True)
class EvalLayout:
    """An evaluation's folder (crops_ray.evaluate): its metrics, per-query hits and index."""

    root: str

    @property
    def metrics_json(self) -> str:
        return f"{self.root}/{METRICS_JSON}"

    @property
    def per_query(self) -> str:
        return f"{self.root}/{PER_QUERY}"

    @property
    def index(self) -> str:
        return f"{self.root}/index"

    @property
    def index_json(self) -> str:
        return f"{self.index}/{INDEX_JSON}"


@dataclass(frozen=True)
class MethodLayout:
    """One method's folder: its training groups, model and checkpoints, its evaluation and result.json."""

    root: str

    @property
    def result_json(self) -> str:
        return f"{self.root}/{RESULT_JSON}"

    @property
    def groups(self) -> str:
        return f"{self.root}/groups"

    @property
    def model(self) -> str:
        return f"{self.root}/model"

    @property
    def checkpoints(self) -> str:
        return f"{self.root}/checkpoints"

    @property
    def doc_embeddings(self) -> str:
        return f"{self.root}/doc_embeddings.parquet"

    @property
    def positives(self) -> str:
        return f"{self.root}/positives.parquet"

    @property
    def eval(self) -> EvalLayout:
        """A trained method's evaluation (on the logs' test sets)."""
        return EvalLayout(f"{self.root}/eval")

    @property
    def test(self) -> EvalLayout:
        """The level sweep's second evaluation: on the logs' test sets, where ``eval`` held validation queries."""
        return EvalLayout(f"{self.root}/test")

    @property
    def evaluations(self) -> tuple[EvalLayout, EvalLayout]:
        """Where its evaluation may lie: a trained method's ``eval/``, else (BM25, zero-shot) the folder itself."""
        return self.eval, EvalLayout(self.root)


@dataclass(frozen=True)
class OnlineLayout:
    """The simulated online A/B test's folder."""

    root: str

    @property
    def counts(self) -> str:
        return f"{self.root}/{ONLINE_COUNTS}"

    @property
    def summary_json(self) -> str:
        return f"{self.root}/{ONLINE_JSON}"


@dataclass(frozen=True)
class SeedLayout:
    """One seed's folder: the generated world, the validated logs, the engine's data, one folder per method, the
    sparse methods' start and the online test."""

    root: str

    @property
    def world(self) -> LogsLayout:
        return LogsLayout(f"{self.root}/world")

    @property
    def validated(self) -> str:
        return f"{self.root}/validated"

    @property
    def data(self) -> DataLayout:
        return DataLayout(f"{self.root}/data")

    def method(self, name: str) -> MethodLayout:
        return MethodLayout(f"{self.root}/{name}")

    @property
    def sparse_init(self) -> str:
        return f"{self.root}/{SPARSE_INIT}"

    @property
    def online(self) -> OnlineLayout:
        return OnlineLayout(f"{self.root}/online")


@dataclass(frozen=True)
class RunLayout:
    """A demo's ``--out``: one folder per seed, and the report over the seeds."""

    root: str

    def seed(self, seed: int) -> SeedLayout:
        return SeedLayout(f"{self.root}/seed-{seed}")

    @property
    def report_md(self) -> str:
        return f"{self.root}/report.md"

    @property
    def metrics_json(self) -> str:
        return f"{self.root}/{METRICS_JSON}"

    @property
    def table1_png(self) -> str:
        return f"{self.root}/table1.png"

    @property
    def filter_bubble_png(self) -> str:
        return f"{self.root}/filter_bubble.png"
