"""HLA: samples from the search log keep each pair's best stage; groups keep the hierarchy and are reproducible."""

import collections
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crops_ray import storage
from crops_ray.hla import (
    GROUPS_SCHEMA,
    GroupConfig,
    LevelConfig,
    build_groups,
    load_samples,
    log_samples,
    write_groups,
)
from crops_ray.schema import SAMPLES_SCHEMA
from crops_ray.world.generator import generate_world, world_config

VIDEOS = pa.table({"video_id": ["v1", "v2", "v3", "v4"], "text": ["one", "two", "three", "four"]})


def _log(rows):
    return pa.Table.from_pylist(
        [dict(request_id=r, user_id="u", query=q, ts=1_767_300_000, video_id=v, stage=s) for r, q, v, s in rows]
    )


def _samples(rows):
    """rows: (query, video_id, level, source)."""
    return pa.Table.from_pylist(
        [dict(query=q, video_id=v, text=f"text of {v}", level=lv, source=s, score=None) for q, v, lv, s in rows],
        schema=SAMPLES_SCHEMA,
    )


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "tiny"
    generate_world(str(out), world_config("tiny", seed=3), progress=lambda *_: None)
    return str(out)


def test_log_samples_keep_the_best_stage_of_each_pair():
    log = _log(
        [
            ("r1", "jaguar", "v1", "exposed"),
            ("r2", "jaguar", "v1", "clicked"),  # clicked in another request: the pair is a click
            ("r1", "jaguar", "v2", "filtered"),
            ("r2", "jaguar", "v2", "ranked"),
            ("r1", "jaguar", "v9", "exposed"),  # not in videos: dropped
            ("r3", "java", "v1", "filtered"),
        ]
    )
    samples = log_samples(log, VIDEOS)
    assert samples.schema == SAMPLES_SCHEMA
    got = {(r["query"], r["video_id"]): (r["level"], r["source"], r["text"]) for r in samples.to_pylist()}
    assert got == {
        ("jaguar", "v1"): (4, "clicked", "one"),
        ("jaguar", "v2"): (2, "ranked", "two"),
        ("java", "v1"): (1, "filtered", "one"),
    }
    levels = LevelConfig(levels={**LevelConfig().levels, "clicked": 5, "filtered": 2})
    custom = {(r["query"], r["video_id"]): r["level"] for r in log_samples(log, VIDEOS, levels).to_pylist()}
    assert custom[("jaguar", "v1")] == 5 and custom[("java", "v1")] == 2


def test_log_samples_reject_unknown_stages():
    with pytest.raises(ValueError, match="unknown stages.*bookmarked"):
        log_samples(_log([("r1", "q", "v1", "bookmarked")]), VIDEOS)


def test_groups_anchor_on_the_top_level_and_cap_sizes():
    rows = [
        ("jaguar", f"v{i}", lv, src)
        for i, (lv, src) in enumerate(
            [
                (5, "reformulation"),
                (4, "clicked"),
                (3, "exposed"),
                (3, "exposed"),
                (2, "ranked"),
                (2, "ranked"),
                (1, "filtered"),
                (1, "filtered"),
                (1, "filtered"),
                (1, "filtered"),
                (0, "exposed"),
            ]
        )
    ]
    rows += [("java", "w1", 3, "exposed"), ("java", "w2", 3, "exposed"), ("java", "w3", 2, "ranked")]
    groups = build_groups(_samples(rows), GroupConfig(group_size=4, max_examples_per_query=3))
    assert groups.schema == GROUPS_SCHEMA
    by_query = collections.defaultdict(list)
    for g in groups.to_pylist():
        by_query[g["query"]].append(g)
        assert len(g["texts"]) == len(g["levels"]) == len(g["video_ids"]) == len(g["sources"]) <= 4
        assert g["levels"][0] == max(g["levels"])  # the anchor leads
        assert g["levels"][1:] == sorted(g["levels"][1:], reverse=True)
        assert all(t == f"text of {v}" for t, v in zip(g["texts"], g["video_ids"]))  # lists stay aligned
        assert 0 not in g["levels"]  # level 0 is never stored: negatives come from the batch
        assert len(set(g["video_ids"])) == len(g["video_ids"])
    # jaguar: one level-5 candidate, 10 candidates -> ceil(10/4) = 3 examples, all anchored on the reformulation
    assert len(by_query["jaguar"]) == 3
    assert all(g["video_ids"][0] == "v0" and g["sources"][0] == "reformulation" for g in by_query["jaguar"])
    # java: two level-3 candidates -> each anchors one example
    assert sorted(g["video_ids"][0] for g in by_query["java"]) == ["w1", "w2"]


def test_groups_prefer_higher_levels():
    rows = [("q", "top", 4, "clicked")]
    rows += [("q", f"hi{i}", 3, "exposed") for i in range(20)] + [("q", f"lo{i}", 1, "filtered") for i in range(20)]
    counts = collections.Counter()
    for seed in range(20):
        for g in build_groups(
            _samples(rows), GroupConfig(group_size=6, max_examples_per_query=1, seed=seed)
        ).to_pylist():
            counts.update(g["levels"][1:])
    # weight 2**3 vs 2**1 per candidate: about 4 of 5 companions are level 3, and level 1 still appears
    assert counts[3] > 3 * counts[1] > 0
    uniform = collections.Counter()
    for seed in range(20):
        for g in build_groups(
            _samples(rows), GroupConfig(group_size=6, max_examples_per_query=1, level_preference=1.0, seed=seed)
        ).to_pylist():
            uniform.update(g["levels"][1:])
    assert uniform[1] > counts[1]


def test_groups_are_seeded_and_per_query():
    rows = [(q, f"{q}{i}", 1 + i % 4, "exposed") for q in ("alpha", "beta", "gamma") for i in range(12)]
    cfg = GroupConfig(group_size=4, max_examples_per_query=2, seed=5)
    first, again = build_groups(_samples(rows), cfg), build_groups(_samples(rows), cfg)
    assert first.equals(again)
    assert not first.equals(build_groups(_samples(rows), GroupConfig(group_size=4, max_examples_per_query=2, seed=6)))

    def of(table, query):
        return sorted(tuple(g["video_ids"]) for g in table.to_pylist() if g["query"] == query)

    alone = build_groups(_samples([r for r in rows if r[0] == "beta"]), cfg)
    assert of(alone, "beta") == of(first, "beta")  # a query's groups do not depend on the other queries


def test_a_pair_from_several_sources_keeps_its_highest_level():
    rows = [("q", "v1", 3, "exposed"), ("q", "v1", 5, "reformulation"), ("q", "v2", 2, "ranked")]
    (group,) = build_groups(_samples(rows)).to_pylist()
    assert list(zip(group["video_ids"], group["levels"], group["sources"])) == [
        ("v1", 5, "reformulation"),
        ("v2", 2, "ranked"),
    ]


def test_one_tie_rule_everywhere_the_log_names_a_pair_two_sources_give_the_same_level():
    """A click that P2 also found (both level 4) stays a click in every consumer: keep_highest, build_groups, the
    experiment's method samples and the engine's vectorised labelling; a higher level still wins outright."""
    import pandas as pd

    from crops_ray.engine.assemble import CANDIDATES_SCHEMA, to_samples
    from crops_ray.experiment import METHODS, method_samples
    from crops_ray.hla import SOURCE_RANK, keep_highest

    assert list(SOURCE_RANK)[:4] == ["clicked", "exposed", "ranked", "filtered"]
    rows = [("q", "v1", 4, "recommendation"), ("q", "v1", 4, "clicked"), ("q", "v2", 4, "clicked")]
    rows += [("q", "v2", 5, "reformulation"), ("q", "v3", 4, "llm"), ("q", "v3", 3, "exposed")]
    want = {"v1": (4, "clicked"), "v2": (5, "reformulation"), "v3": (4, "llm")}
    frame = pd.DataFrame(rows, columns=["query", "video_id", "level", "source"])
    for order in (frame, frame.iloc[::-1]):  # whatever order the rows come in
        kept = keep_highest(order)
        assert {v: (lv, s) for v, lv, s in zip(kept["video_id"], kept["level"], kept["source"])} == want
    (group,) = build_groups(_samples(rows)).to_pylist()
    assert {v: (lv, s) for v, lv, s in zip(group["video_ids"], group["levels"], group["sources"])} == want
    enriched = _samples([r for r in rows if r[3] not in ("clicked", "exposed")])
    log = _samples([r for r in rows if r[3] in ("clicked", "exposed")])
    mixed = method_samples(enriched, METHODS["crops"], log=log).to_pandas()
    assert {v: (lv, s) for v, lv, s in zip(mixed["video_id"], mixed["level"], mixed["source"])} == want
    wide = {name: [None] for name in CANDIDATES_SCHEMA.names}
    wide.update(query=["q"], video_id=["v1"], text=["t"], log_level=[4], log_source=["clicked"])
    wide.update(reformulation_kept=[False], recommendation_kept=[True], score=[0.9])
    engine = to_samples(pa.table(wide, schema=CANDIDATES_SCHEMA), dict(LevelConfig().levels)).to_pylist()
    assert [(r["level"], r["source"]) for r in engine] == [(4, "clicked")]


def test_write_groups_shards_and_reads_back(tmp_path):
    rows = [(f"q{k}", f"v{k}-{i}", 1 + i % 3, "exposed") for k in range(7) for i in range(3)]
    groups = build_groups(_samples(rows), GroupConfig(group_size=3))
    files = write_groups(groups, str(tmp_path / "groups"), rows_per_shard=3)
    assert [os.path.basename(f) for f in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert storage.read_table(str(tmp_path / "groups")).equals(groups)
    assert pq.read_schema(files[0]) == GROUPS_SCHEMA
    write_groups(groups.slice(0, 2), str(tmp_path / "groups"))  # replaces the folder
    assert storage.read_table(str(tmp_path / "groups")).num_rows == 2
    with pytest.raises(ValueError, match="no training examples"):
        write_groups(groups.slice(0, 0), str(tmp_path / "empty"))


def test_group_config_rejects_nonsense():
    with pytest.raises(ValueError, match="group_size"):
        GroupConfig(group_size=0)
    with pytest.raises(ValueError, match="level_preference"):
        GroupConfig(level_preference=0)


def test_load_samples_from_logs_and_from_samples(tiny_world, tmp_path):
    samples, what = load_samples(tiny_world)
    assert "search log" in what and samples.num_rows > 1000
    assert set(samples["source"].to_pylist()) == {"clicked", "exposed", "ranked", "filtered"}
    assert samples.group_by(["query", "video_id"]).aggregate([]).num_rows == samples.num_rows
    os.makedirs(tmp_path / "engine" / "samples")
    pq.write_table(samples, tmp_path / "engine" / "samples" / "part-00000.parquet")
    again, what = load_samples(str(tmp_path / "engine"))
    assert what.startswith("samples") and again.equals(samples)
    groups = build_groups(samples)
    assert groups.num_rows >= samples.group_by("query").aggregate([]).num_rows
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_samples(str(tmp_path / "missing"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="no parquet data"):
        load_samples(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="neither a log folder"):
        load_samples(os.path.join(tiny_world, "eval"))


@pytest.mark.ray
def test_ray_data_groups_equal_the_drivers_groups(tiny_world, tmp_path, ray_local):
    """pipelines/train.py groups the engine's samples with Ray Data (the driver never holds them): the files it
    writes, in name order, are build_groups' table row for row, from samples split over several files and grouped
    in several query buckets."""
    from crops_ray.train.groups import write_groups_dataset

    samples, _ = load_samples(tiny_world)
    folder = tmp_path / "samples"
    folder.mkdir()
    third = samples.num_rows // 3 + 1
    for i in range(3):
        pq.write_table(samples.slice(i * third, third), folder / f"part-{i:05d}.parquet")
    cfg = GroupConfig(group_size=4, seed=7, rows_per_shard=500, samples_per_bucket=samples.num_rows // 4)
    written = write_groups_dataset(str(folder), str(tmp_path / "groups"), cfg)
    files = sorted(str(p) for p in (tmp_path / "groups").glob("*.parquet"))
    got = pa.concat_tables(pq.read_table(f) for f in files).cast(GROUPS_SCHEMA)
    want = build_groups(samples, cfg)
    assert written == want.num_rows == got.num_rows and len(files) > 4  # 4 or 5 buckets, some over 500 rows
    assert want.group_by("query").aggregate([]).num_rows == samples.group_by("query").aggregate([]).num_rows
    assert got.equals(want)
    negatives = tmp_path / "negatives"
    negatives.mkdir()
    pq.write_table(
        samples.set_column(
            samples.schema.get_field_index("level"),
            "level",
            pa.array([0] * samples.num_rows, samples.schema.field("level").type),
        ),
        negatives / "part-00000.parquet",
    )
    with pytest.raises(ValueError, match="no training examples"):
        write_groups_dataset(str(negatives), str(tmp_path / "nothing"), cfg)
    assert not (tmp_path / "nothing").exists()
