"""Hierarchical Label Assignment (HLA): which level each sample source gets, and the training groups built on it.

The paper's defaults: 5 reformulation positives; 4 recommendation-feed, LLM and clicked; 3 exposed but not
clicked; 2 reached ranking, not exposed; 1 filtered between pre-ranking and ranking; 0 in-batch negatives.
The mapping is configuration, so another domain can change it without touching code.

**Training groups** (what the trainer reads). A training example is one query with a small group of its labelled
candidates. Group building (``build_groups``) works per query, so its output for a query does not depend on the other
queries (each query's random draws are seeded from ``(seed, query)``), and writes parquet with :data:`GROUPS_SCHEMA`,
one row per example:

- ``query`` string;
- ``texts`` list<string>, ``video_ids`` list<string>, ``levels`` list<int8>, ``sources`` list<string>: the
  group's candidates, aligned; the first is the *anchor*, a candidate at the highest level the query has, the
  others follow by level, best first.

Level 0 (the in-batch negatives: the other examples' candidates in the same global batch) is stored only where a
level map makes a source a negative of its own query (:data:`LEVEL_MAPS`); it is never an anchor.
How a query's ``n`` candidates become examples (:class:`GroupConfig`): ``max(#anchors, ceil(n / group_size))``
examples, at most ``max_examples_per_query``, where the anchors (the candidates at the query's highest level)
take turns; each anchor's companions are drawn without replacement with weight ``level_preference ** level``,
so the higher levels are kept and the lower ones still appear.
The rows are shuffled (seeded) so a batch mixes queries: the samples are split by a hash of the query into
buckets of about :attr:`GroupConfig.samples_per_bucket` samples, and each bucket's examples are ordered by a hash
of seed, query and example number (:func:`example_order`); the buckets follow each other.

``sources`` keeps where each candidate came from, which is what the DPR baseline needs: training with
``loss="infonce"`` keeps only the search-log candidates (sources in :data:`crops_ray.schema.STAGES`), labels the
``clicked`` ones positive and the other logged ones (exposed, ranked, filtered) hard negatives at level 0
(see :func:`crops_ray.train.candidate_labels`).

Samples from a validated search log alone (before the data engine adds the cross-perspective ones):
:func:`log_samples` (source = the stage the candidate reached).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from crops_ray import storage
from crops_ray.config import config
from crops_ray.schema import SAMPLE_SOURCES, SAMPLES_SCHEMA, STAGES, LogSchemaError, filesystem_and_path, table_files
from crops_ray.sources import Source, by_tie_rank

IN_BATCH_LEVEL = 0


PAPER = {source.value: source.paper_level for source in Source}

# Named level maps: the paper's, and hypotheses about it that pipelines/level_sweep.py measures (the paper's fourth
# limitation: whether its levels transfer). A source at level 0 is a stored negative of its query: it stays in the
# query's training groups and every positive of the query competes with it, as with the in-batch negatives.
LEVEL_MAPS = {
    # The paper: 5 reformulation; 4 system-level, LLM and clicked; 3 exposed; 2 ranked; 1 filtered.
    "paper": PAPER,
    # Mined positives (P2, P3) one level below the clicks, not equal to them: a gate's kept pair is less sure than
    # a click, and mined pairs can outnumber clicks. The log's stages keep their order below.
    "mined_below_clicks": {**PAPER, Source.REFORMULATION.value: 6, Source.CLICKED.value: 5},
    # Exposed but not clicked is a negative: what the logging engine showed and the user passed over.
    "exposed_negative": {**PAPER, Source.EXPOSED.value: 0},
    # The engine's lower stages (ranked, filtered) are plain negatives: they say what the old engine liked.
    "lower_stages_negative": {**PAPER, Source.RANKED.value: 0, Source.FILTERED.value: 0},
    # One positive class (every positive source at 1: the paper's click level and above), every other logged stage a
    # negative: InfoNCE with the log's hard negatives, the sources kept.
    "binary": {source: int(level >= PAPER[Source.CLICKED]) for source, level in PAPER.items()},
}


def _paper_levels() -> dict[str, int]:
    return dict(PAPER)


@config
class LevelConfig:
    """Each sample source's HLA level: ``name`` (one of :data:`LEVEL_MAPS`) or an explicit ``levels`` map (YAML:
    ``levels: {levels: {exposed: 2, ...}}``, which wins; every source named, levels >= 0, some source above 0)."""

    levels: dict[str, int] = field(default_factory=_paper_levels)
    name: str = "paper"

    def __post_init__(self) -> None:
        if self.name not in LEVEL_MAPS and self.name != "custom":
            raise ValueError(f"LevelConfig: unknown level map {self.name!r}; named maps: {list(LEVEL_MAPS)}")
        if self.name != "paper" and self.levels == PAPER:  # a named map, its levels not given
            self.levels = dict(LEVEL_MAPS.get(self.name, PAPER))
        elif self.levels != LEVEL_MAPS.get(self.name):
            self.name = "custom"
        unknown = sorted(set(self.levels) - set(SAMPLE_SOURCES))
        if unknown:
            raise ValueError(f"LevelConfig: unknown sources {unknown}; known: {list(SAMPLE_SOURCES)}")
        missing = sorted(set(SAMPLE_SOURCES) - set(self.levels))
        if missing:
            raise ValueError(f"LevelConfig: no level for sources {missing}")
        bad = {k: v for k, v in self.levels.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0}
        if bad:
            raise ValueError(f"LevelConfig: levels must be integers >= {IN_BATCH_LEVEL}: {bad}")
        if max(self.levels.values()) <= IN_BATCH_LEVEL:
            raise ValueError("LevelConfig: every source is at level 0; some source must be a positive (level >= 1)")

    def level(self, source: str) -> int:
        return self.levels[source]


# ------------------------------------------------------------------------------------------ training groups

GROUPS_SCHEMA = pa.schema(
    [
        ("query", pa.string()),
        ("texts", pa.list_(pa.string())),
        ("video_ids", pa.list_(pa.string())),
        ("levels", pa.list_(pa.int8())),
        ("sources", pa.list_(pa.string())),
    ]
)


@config
class GroupConfig:
    group_size: int = 8  # candidates per example: the anchor plus up to group_size - 1 companions
    max_examples_per_query: int = 4
    level_preference: float = 2.0  # companion sampling weight = level_preference ** level (1.0: uniform)
    seed: int = 0
    rows_per_shard: int = 100_000  # examples per output parquet file
    # Samples are split by a hash of their query into ceil(samples / samples_per_bucket) buckets, each grouped
    # and shuffled on its own (by one Ray Data task on a team's logs): what one task holds is bounded.
    samples_per_bucket: int = 500_000

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"GroupConfig.group_size must be >= 1, got {self.group_size}")
        if self.max_examples_per_query < 1:
            raise ValueError(f"GroupConfig.max_examples_per_query must be >= 1, got {self.max_examples_per_query}")
        if not self.level_preference > 0:
            raise ValueError(f"GroupConfig.level_preference must be > 0, got {self.level_preference}")
        if self.samples_per_bucket < 1:
            raise ValueError(f"GroupConfig.samples_per_bucket must be >= 1, got {self.samples_per_bucket}")
        if self.rows_per_shard < 1:
            raise ValueError(f"GroupConfig.rows_per_shard must be >= 1, got {self.rows_per_shard}")


def stable_hash(text: str) -> int:
    """A 63-bit hash of ``text`` that is the same in every process (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 1


# HLA's one tie rule. A (query, video) pair that several sources give keeps its highest level; between sources at
# the same level, the lower Source.tie_rank names it (crops_ray.sources: the log's stages before the perspectives).
SOURCE_RANK = {source.value: source.tie_rank for source in by_tie_rank()}


def keep_highest(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (query, video): its highest ``level``, ties broken by :data:`SOURCE_RANK` on ``source``.

    Every consumer of HLA labels calls this (or, vectorised over the engine's wide rows, uses
    :data:`SOURCE_RANK` the same way: ``engine/assemble.to_samples``). Sorted by query, level (desc), the tie
    order, video."""
    rank = rows["source"].map(SOURCE_RANK).fillna(len(SOURCE_RANK))
    order = rows.assign(_rank=rank).sort_values(
        ["query", "video_id", "level", "_rank"], ascending=[True, True, False, True], kind="stable"
    )
    kept = order.drop_duplicates(["query", "video_id"], keep="first")
    kept = kept.sort_values(["query", "level", "_rank", "video_id"], ascending=[True, False, True, True], kind="stable")
    return kept.drop(columns="_rank")


def log_samples(search_log: pa.Table, videos: pa.Table, levels: LevelConfig | None = None) -> pa.Table:
    """Samples (:data:`SAMPLES_SCHEMA`) from a validated search log: source = the stage a candidate reached.

    A (query, video) pair logged in several requests keeps its highest level (clicked once, exposed elsewhere:
    clicked). Rows whose video is not in ``videos`` are dropped (validated logs have none). ``score`` is null.
    """
    levels = levels or LevelConfig()
    for name, table, columns in (
        ("search_log", search_log, ("query", "video_id", "stage")),
        ("videos", videos, ("video_id", "text")),
    ):
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise ValueError(f"log_samples: {name} lacks column(s) {missing}; it has {table.column_names}")
    log = search_log.select(["query", "video_id", "stage"]).to_pandas()
    unknown = sorted(set(log["stage"].dropna()) - set(STAGES))
    if unknown:
        raise ValueError(
            f"log_samples: unknown stages {unknown}; validate the logs first (contract stages: {list(STAGES)})"
        )
    log = log.dropna()
    log["level"] = log["stage"].map(levels.levels).astype("int8")
    log = keep_highest(log.rename(columns={"stage": "source"})).rename(columns={"source": "stage"})
    text = videos.select(["video_id", "text"]).to_pandas().drop_duplicates("video_id").set_index("video_id")["text"]
    log["text"] = log["video_id"].map(text)
    log = log.dropna(subset=["text"])
    return pa.table(
        {
            "query": pa.array(log["query"].tolist(), pa.string()),
            "video_id": pa.array(log["video_id"].tolist(), pa.string()),
            "text": pa.array(log["text"].tolist(), pa.string()),
            "level": pa.array(log["level"].to_numpy(), pa.int8()),
            "source": pa.array(log["stage"].tolist(), pa.string()),
            "score": pa.nulls(len(log), pa.float32()),
        },
        schema=SAMPLES_SCHEMA,
    )


def _query_examples(levels: np.ndarray, cfg: GroupConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Candidate index arrays, one per example, for one query's candidates with ``levels``."""
    n = len(levels)
    top = np.flatnonzero(levels == levels.max())
    rng.shuffle(top)
    n_examples = min(cfg.max_examples_per_query, max(len(top), math.ceil(n / cfg.group_size)))
    weights = np.power(float(cfg.level_preference), levels.astype(np.float64))
    examples = []
    for e in range(n_examples):
        anchor = top[e % len(top)]
        rest = np.delete(np.arange(n), anchor)
        k = min(cfg.group_size - 1, len(rest))
        # Weighted sampling without replacement (Efraimidis-Spirakis): the k largest u ** (1 / w).
        keys = np.log(rng.random(len(rest))) / weights[rest]
        chosen = rest[np.argsort(-keys, kind="stable")[:k]]
        chosen = chosen[np.argsort(-levels[chosen], kind="stable")]
        examples.append(np.concatenate([[anchor], chosen]).astype(np.int64))
    return examples


GROUP_COLUMNS = ["query", "video_id", "text", "level", "source"]


def check_sample_columns(names: list[str], where: str) -> None:
    missing = [c for c in GROUP_COLUMNS if c not in names]
    if missing:
        raise ValueError(
            f"{where}: samples lack column(s) {missing}; expected the samples schema {SAMPLES_SCHEMA.names}"
        )


def example_order(seed: int, query: str, example: int) -> int:
    """Where an example goes within its bucket: a seeded hash of (query, example number)."""
    return stable_hash(f"{seed}\x1f{query}\x1f{example}")


def num_buckets(num_samples: int, cfg: GroupConfig) -> int:
    """How many query buckets ``num_samples`` input samples are grouped in (:attr:`GroupConfig.samples_per_bucket`)."""
    return max(1, math.ceil(num_samples / cfg.samples_per_bucket))


def query_buckets(queries: pa.Array, buckets: int) -> np.ndarray:
    """The bucket of each query (a hash of the query alone, so every sample of a query lands in the same one)."""
    unique = pc.unique(queries)
    codes = np.array([stable_hash(q) % buckets for q in unique.to_pylist()], dtype=np.int64)
    return codes[pc.index_in(queries, value_set=unique).to_numpy(zero_copy_only=False)]


def query_groups(df: pd.DataFrame, cfg: GroupConfig) -> pa.Table:
    """The training examples of the samples in ``df`` (any number of whole queries) in their seeded order: sorted by
    :func:`example_order`, so a batch mixes queries. The one rule both paths share (one bucket at a time)."""
    df = df.dropna(subset=["query", "video_id", "text", "level"])
    df = df[df["level"] >= IN_BATCH_LEVEL]
    df = keep_highest(df)
    # A level map may make a source a stored negative (level 0): it stays in its query's groups, never as the
    # anchor, and a query with no positive at all gives no example.
    positive = df.groupby("query", sort=False)["level"].transform("max") > IN_BATCH_LEVEL
    df = df[positive.to_numpy()] if len(df) else df

    queries = df["query"].to_numpy(object)
    levels = df["level"].to_numpy(np.int64)
    texts, vids, sources = (df[c].to_numpy(object) for c in ("text", "video_id", "source"))
    starts = np.flatnonzero(np.r_[True, queries[1:] != queries[:-1]]) if len(df) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(df)]
    rows: dict[str, list] = {name: [] for name in GROUPS_SCHEMA.names}
    order: list[int] = []
    for start, end in zip(starts.tolist(), ends.tolist()):
        query = queries[start]
        rng = np.random.default_rng([cfg.seed, stable_hash(query)])
        for e, idx in enumerate(_query_examples(levels[start:end], cfg, rng)):
            idx = idx + start
            rows["query"].append(query)
            rows["texts"].append(texts[idx].tolist())
            rows["video_ids"].append(vids[idx].tolist())
            rows["levels"].append(levels[idx].tolist())
            rows["sources"].append(sources[idx].tolist())
            order.append(example_order(cfg.seed, query, e))
    table = pa.table(rows, schema=GROUPS_SCHEMA)
    return table.take(pa.array(np.argsort(np.array(order, dtype=np.int64), kind="stable"), pa.int64()))


def build_groups(samples: pa.Table, cfg: GroupConfig | None = None) -> pa.Table:
    """Training examples (:data:`GROUPS_SCHEMA`) from samples (:data:`SAMPLES_SCHEMA`) held in memory; see the
    section docstring. Samples without text are skipped, level-0 samples are kept as stored negatives of queries
    that have a positive; a (query, video) pair given by
    several sources keeps its highest level (:func:`keep_highest`: ties go to the log). Deterministic for a given
    ``cfg.seed``: the buckets in turn (:func:`query_buckets`), each in its seeded order.
    :func:`crops_ray.train.groups.write_groups_dataset` writes the same table from a samples folder of any size
    without holding it.
    """
    cfg = cfg or GroupConfig()
    check_sample_columns(samples.column_names, "build_groups")
    samples = samples.select(GROUP_COLUMNS)
    buckets = num_buckets(samples.num_rows, cfg)
    of = query_buckets(samples["query"], buckets) if samples.num_rows else np.zeros(0, np.int64)
    tables = [query_groups(samples.filter(pa.array(of == b)).to_pandas(), cfg) for b in range(buckets)]
    return pa.concat_tables(tables)


def write_groups(groups: pa.Table, out: str, rows_per_shard: int = GroupConfig.rows_per_shard) -> list[str]:
    """Write ``groups`` as ``out/part-NNNNN.parquet`` shards (replaced whole: storage.Output); return the paths."""
    if groups.num_rows == 0:
        raise ValueError("write_groups: no training examples to write (were the samples empty?)")
    groups = groups.cast(GROUPS_SCHEMA)
    names = [f"part-{i:05d}.parquet" for i in range(math.ceil(groups.num_rows / rows_per_shard))]
    with storage.Output(out) as root:
        for i, name in enumerate(names):
            storage.write_table(groups.slice(i * rows_per_shard, rows_per_shard), f"{root}/{name}")
    return [f"{out.rstrip('/')}/{n}" for n in names]


def samples_files(data: str) -> list[str] | None:
    """The samples parquet files ``data`` names (a folder holding ``samples/``, a samples folder or file), their
    columns checked, or None when ``data`` is a log folder (``search_log/`` + ``videos/``: its samples are
    :func:`log_samples`)."""
    import pyarrow.dataset as pads

    fs, base = filesystem_and_path(data.rstrip("/"))
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{data}: no such file or folder")
    try:
        if table_files(data, "search_log"):
            return None
    except LogSchemaError:
        pass
    try:
        files = table_files(data, "samples")
    except LogSchemaError:
        files = storage.parquet_files(data) if info.type == pafs.FileType.Directory else [data]
    if not files:
        raise ValueError(
            f"{data}: holds no parquet data (expected a log folder with search_log/ and videos/, or samples)"
        )
    try:
        names = pads.dataset(files, format="parquet").schema.names
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValueError(f"{data}: neither a log folder (search_log/, videos/) nor samples parquet ({exc})") from exc
    check_sample_columns(names, f"{data}: neither a log folder (search_log/, videos/) nor samples")
    return files


def load_samples(data: str, levels: LevelConfig | None = None) -> tuple[pa.Table, str]:
    """Samples from ``data``: a log folder (``search_log/`` + ``videos/``: :func:`log_samples`), a folder holding
    ``samples/`` (the data engine's output), or a samples parquet folder/file itself. Returns (samples, what was read).
    """
    files = samples_files(data)
    if files is None:
        search_log = storage.read_table(table_files(data, "search_log"))
        videos = storage.read_table(table_files(data, "videos"))
        return log_samples(search_log, videos, levels), f"search log {data} ({search_log.num_rows:,} rows)"
    samples = storage.read_table(files)
    return samples, f"samples {data} ({samples.num_rows:,} rows)"
