"""Hierarchical Label Assignment (HLA): which level each sample source gets.

The paper's defaults: 5 reformulation positives; 4 recommendation-feed, LLM and clicked; 3 exposed but not
clicked; 2 reached ranking, not exposed; 1 filtered between pre-ranking and ranking; 0 in-batch negatives.
The mapping is configuration, so another domain can change it without touching code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crops_ray.schema import SAMPLE_SOURCES

IN_BATCH_LEVEL = 0


def _paper_levels() -> dict[str, int]:
    return {"reformulation": 5, "recommendation": 4, "llm": 4, "clicked": 4, "exposed": 3, "ranked": 2, "filtered": 1}


@dataclass
class LevelConfig:
    levels: dict[str, int] = field(default_factory=_paper_levels)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.levels) - set(SAMPLE_SOURCES))
        if unknown:
            raise ValueError(f"LevelConfig: unknown sources {unknown}; known: {list(SAMPLE_SOURCES)}")
        missing = sorted(set(SAMPLE_SOURCES) - set(self.levels))
        if missing:
            raise ValueError(f"LevelConfig: no level for sources {missing}")
        bad = {k: v for k, v in self.levels.items() if not isinstance(v, int) or v <= IN_BATCH_LEVEL}
        if bad:
            raise ValueError(f"LevelConfig: levels must be integers above the in-batch level {IN_BATCH_LEVEL}: {bad}")

    def level(self, source: str) -> int:
        return self.levels[source]
