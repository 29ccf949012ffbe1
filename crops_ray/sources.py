"""The sample sources: where a labelled (query, video) pair comes from. Every name of a source or a log stage is
spelled here once; the rest of the code names them as :class:`Source` members (a ``StrEnum``: each member *is* its
string, so parquet columns, JSON and f-strings read the same plain names).

Each source carries its perspective (0: the search log's own stages, P0; 1 query reformulation; 2 the recommendation
feed, the system level; 3 the LLM's world knowledge), its level in the paper's Hierarchical Label Assignment (the
default of :class:`crops_ray.hla.LevelConfig`, which may map them otherwise) and its tie rank.

The tie rank is HLA's one tie rule (:func:`crops_ray.hla.keep_highest`): a (query, video) pair that several sources
give keeps its highest level, and between sources at the same level the lower rank names it. The log's stages come
first (the deepest stage first), then the perspectives (P1, P2, P3): what the log observed is evidence, a perspective
only adds what the log lacks. With the paper's levels the rule decides only the label of a click that P2 or P3 also
found (all at level 4); other level maps (``binary``) make it decide more.
"""

from __future__ import annotations

from enum import StrEnum

LOG_PERSPECTIVE = 0  # P0: the stages the search log records


class Source(StrEnum):
    """A sample source: ``Source.CLICKED == "clicked"``, with ``perspective``, ``paper_level`` and ``tie_rank``.

    Declared in the paper's order (its levels, highest first), which is the order of the level maps
    (``crops_ray.hla.LEVEL_MAPS``); the log's stages among them come in funnel order, best first (``schema.STAGES``).
    """

    # name = value, perspective, paper level, tie rank
    REFORMULATION = "reformulation", 1, 5, 4  # P1: clicked under a reformulation within the window
    RECOMMENDATION = "recommendation", 2, 4, 5  # P2: the searcher's feed around the query (system level)
    LLM = "llm", 3, 4, 6  # P3: an LLM's description of another relevant video
    CLICKED = "clicked", LOG_PERSPECTIVE, 4, 0
    EXPOSED = "exposed", LOG_PERSPECTIVE, 3, 1  # shown, not clicked
    RANKED = "ranked", LOG_PERSPECTIVE, 2, 2  # reached ranking, not shown
    FILTERED = "filtered", LOG_PERSPECTIVE, 1, 3  # dropped between pre-ranking and ranking

    def __new__(cls, value: str, perspective: int, paper_level: int, tie_rank: int) -> Source:
        member = str.__new__(cls, value)
        member._value_ = value
        member.perspective = perspective
        member.paper_level = paper_level
        member.tie_rank = tie_rank
        return member

    @property
    def is_stage(self) -> bool:
        """A stage of the search log (P0), as opposed to a cross-perspective source."""
        return self.perspective == LOG_PERSPECTIVE


# The sources whose mined pairs the discriminator gates (theta > alpha): each is a column of the engine's candidates
# that says whether it proposed the pair. P3's descriptions pass the LLM's own quality control instead.
GATED_SOURCES = (Source.REFORMULATION, Source.RECOMMENDATION)
# The log's stages a searcher saw: the results shown, clicked or not.
SHOWN_STAGES = (Source.CLICKED, Source.EXPOSED)


def by_tie_rank() -> list[Source]:
    """Every source, the one that wins a tie first."""
    return sorted(Source, key=lambda source: source.tie_rank)
