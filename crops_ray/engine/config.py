"""The data engine's settings (:class:`EngineConfig`), the one labelling rule derived from them
(:func:`label_settings`), and the error for an input folder the engine cannot read (:class:`EngineInputError`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from crops_ray import schema as S
from crops_ray.discriminator import DiscriminatorConfig
from crops_ray.engine.recommendation import RecommendationConfig
from crops_ray.engine.reformulation import ReformulationConfig
from crops_ray.engine.world_knowledge import WorldKnowledgeConfig
from crops_ray.hla import LevelConfig

SOURCES = tuple(S.PERSPECTIVES)  # p1 reformulation, p2 recommendation, p3 LLM world knowledge


def _paper_levels() -> dict[str, int]:
    return dict(LevelConfig().levels)


@dataclass
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
