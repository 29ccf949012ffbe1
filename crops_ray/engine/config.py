"""The data engine's settings (:class:`EngineConfig`, and P3's :class:`WorldKnowledgeConfig`, which P3's three
modules all read), the one labelling rule derived from them (:func:`label_settings`), and the error for an input
folder the engine cannot read (:class:`EngineInputError`)."""

from __future__ import annotations

from dataclasses import field

from crops_ray import schema as S
from crops_ray.config import config
from crops_ray.discriminator import DiscriminatorConfig
from crops_ray.engine.recommendation import RecommendationConfig
from crops_ray.engine.reformulation import ReformulationConfig
from crops_ray.hla import LevelConfig

SOURCES = tuple(S.PERSPECTIVES)  # p1 reformulation, p2 recommendation, p3 LLM world knowledge
BACKENDS = ("transformers", "vllm")  # P3's LLM backends


@config
class WorldKnowledgeConfig:
    backend: str = "transformers"
    model: str = "smollm2"  # a packaged alias or a local Hugging Face folder (vllm: a local folder)
    max_queries: int = 8  # queries prompted, most clicked first; 0 means every query with a click (GPU scale)
    samples_per_query: int = 4  # prompts per query, one description each
    max_new_tokens: int = 64
    temperature: float = 0.8  # 0: greedy
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    seed: int = 0
    batch_size: int = 8  # prompts per batch
    # quality control
    per_query_cap: int = 3  # synthetic positives kept per query (highest theta first)
    min_words: int = 5
    max_chars: int = 400
    near_duplicate: float = 0.7  # word-set Jaccard at or above which two descriptions count as one
    example_copy: float = 0.6  # word-set Jaccard with the example at or above which a description copies it
    # Prompt bounds: a pasted paragraph or a crawler's query must not blow up the prompt (and the LLM's time and
    # memory); the world's queries are under 60 characters, its titles and captions under 300.
    max_example_chars: int = 400
    max_query_chars: int = 200
    cache_dir: str | None = None  # dequantised models; default $CROPS_CACHE or ~/.cache/crops-ray
    # transformers backend: actor pool
    # Two actors of one thread each keep both cores of a small machine busy; two threads in one actor thrash
    # while Ray Data's own tasks run.
    num_cpus: float = 0.5
    pool_min: int = 2
    pool_max: int = 2
    torch_threads: int | None = None  # None: max(1, round(num_cpus)) per actor
    max_restarts: int = 3
    max_task_retries: int = 3
    # vllm backend
    max_model_len: int = 4096
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    vllm_concurrency: int = 1
    vllm_batch_size: int = 64
    accelerator_type: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"llm backend {self.backend!r} is not one of {BACKENDS}")
        for name in ("samples_per_query", "max_new_tokens", "batch_size", "per_query_cap", "max_model_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"world_knowledge {name} must be >= 1, got {getattr(self, name)}")
        if self.max_queries < 0:
            raise ValueError(f"world_knowledge max_queries must be >= 0, got {self.max_queries}")

    @property
    def prompts_per_batch(self) -> int:  # a batch holds batch_size generations, samples_per_query per prompt
        return max(1, self.batch_size // self.samples_per_query)


def _paper_levels() -> dict[str, int]:
    return dict(LevelConfig().levels)


@config
class EngineConfig:
    sources: tuple = SOURCES  # perspectives switched on (ablations): any of p1, p2, p3
    alpha: float = 0.6  # keep a mined candidate when theta(q, d) > alpha
    levels: dict = field(default_factory=_paper_levels)  # HLA level per sample source
    # The gate: a cross-encoder trained and calibrated on labels from the logs themselves (or the user's labelled
    # pairs); a kept candidate becomes a positive on par with a click, so it must tell a sibling facet from the intent.
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    reformulation: ReformulationConfig = field(default_factory=ReformulationConfig)
    recommendation: RecommendationConfig = field(default_factory=RecommendationConfig)
    # A user with more rows than this (search_log + rec_log) is left out of P1/P2 mining and counted (a crawler
    # or a shared account; see crops_ray.engine.users); 0 turns the cap off.
    max_user_rows: int = 1_000_000
    world_knowledge: WorldKnowledgeConfig = field(default_factory=WorldKnowledgeConfig)
    shuffle_partitions: int = 0  # 0: one partition per rows_per_partition input rows, at least 2
    rows_per_partition: int = 250_000
    rows_per_bucket: int = 20_000  # shuffle keys are hash buckets of users/videos holding about this many rows
    map_num_cpus: float = 0.5  # CPUs per map/groupby task (leaves room for reads and writes on 2 cores)
    # Ray Data shuffle for the groupbys: Ray's default. Measured on the P1/P2 mining shuffle (bench/scaling.py's
    # medium world, 2.7 M log rows, 2 cores): shuffle_v2 28.6 s, hash_shuffle 43.9 s, sort_shuffle_pull_based
    # 108.7 s with the driver growing to 1.6 GB (the sorted shuffle passes through it; 0.3 GB with the other two);
    # on the tiny world 6.9, 6.6 and 4.8 s.
    shuffle_strategy: str = "shuffle_v2"
    keep_work: bool = False  # keep OUT/_work/ (intermediate parquet) for inspection
    # Audit only (a generated world's eval/, never an input): "relevant" means a judgment of at least this grade.
    # 2 = relevant, not merely marginal (grade 1: another subtopic of the same topic).
    audit_min_grade: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.sources, str):
            self.sources = tuple(s.strip() for s in self.sources.split(",") if s.strip())
        self.sources = tuple(self.sources)
        unknown = sorted(set(self.sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown sources {unknown}; choose from {list(SOURCES)} (comma-separated)")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        LevelConfig(dict(self.levels))  # validates the level map
        from ray.data.context import ShuffleStrategy

        ShuffleStrategy(self.shuffle_strategy)  # raises on an unknown strategy
        if self.max_user_rows < 0:
            raise ValueError(f"max_user_rows must be >= 0 (0 turns the cap off), got {self.max_user_rows}")
        if self.rows_per_partition < 1 or self.rows_per_bucket < 1 or self.shuffle_partitions < 0:
            raise ValueError("shuffle_partitions must be >= 0, rows_per_partition and rows_per_bucket >= 1")


def label_settings(cfg: EngineConfig) -> dict:
    """:func:`assemble.label_candidates`' keyword arguments for ``cfg``: alpha and the reformulation gate (no gate
    without P1). One rule for the engine and for anything that relabels its candidates (the alpha sweep)."""
    gate = cfg.reformulation.gate if "p1" in cfg.sources else "none"
    return {"alpha": cfg.alpha, "gate": gate, "gate_threshold": cfg.reformulation.gate_threshold}


class EngineInputError(ValueError):
    """The input folder is not what build_data reads (with a message saying what to do)."""
