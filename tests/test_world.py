"""The embedded world: deterministic, in the log contract, and it really has the filter bubble."""

import hashlib
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from crops_ray import schema as S
from crops_ray.world import vocabulary
from crops_ray.world.generator import build_catalog, generate_world, world_config

WINDOW_S = 90


def _digest(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in sorted(files):
            if f == "world.json":
                continue  # holds the wall time
            path = os.path.join(dirpath, f)
            out[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "tiny"
    stats = generate_world(str(out), world_config("tiny", seed=7), progress=lambda *_: None)
    return out, stats


def test_vocabulary_invariants():
    vocabulary.check_vocabulary()


def test_same_seed_same_bytes_other_seed_differs(tiny_world, tmp_path):
    out, _ = tiny_world
    generate_world(str(tmp_path / "again"), world_config("tiny", seed=7), progress=lambda *_: None)
    generate_world(str(tmp_path / "other"), world_config("tiny", seed=8), progress=lambda *_: None)
    first = _digest(out)
    assert first == _digest(tmp_path / "again")
    other = _digest(tmp_path / "other")
    assert other.keys() == first.keys()
    assert other["search_log/part-00000.parquet"] != first["search_log/part-00000.parquet"]


@pytest.mark.ray
def test_ray_shards_give_the_same_bytes(tiny_world, tmp_path, ray_local):
    out, _ = tiny_world
    generate_world(str(tmp_path / "ray"), world_config("tiny", seed=7), use_ray=True, progress=lambda *_: None)
    assert _digest(tmp_path / "ray") == _digest(out)


def test_layout_and_schemas(tiny_world):
    out, stats = tiny_world
    for table in S.TABLES:
        files = S.table_files(str(out), table)
        assert pq.read_schema(files[0]).names == S.SCHEMAS[table].names
        assert S.count_rows(files) > 0
    for name, schema in S.EVAL_SCHEMAS.items():
        assert pq.read_schema(out / "eval" / f"{name}.parquet").names == schema.names
    assert stats["videos"] == pq.read_metadata(S.table_files(str(out), "videos")[0]).num_rows
    assert stats["reformulations"] > 0 and stats["eval_qr_pairs"] > 0 and stats["eval_ct_pairs"] > 0
    # The logs cover only the training period; ground truth is the later one.
    cfg = world_config("tiny")
    ts = pq.read_table(out / "search_log", columns=["ts"])["ts"].to_numpy()
    assert ts.max() < 1_767_225_600 + cfg.train_days * 86_400 + 3_600


def test_filter_bubble_minority_senses_hidden_from_search_but_found_elsewhere(tmp_path):
    from crops_ray.world.bubble import bubble_table

    out = tmp_path / "w"
    generate_world(str(out), world_config("tiny", seed=3, users=400), progress=lambda *_: None)
    table = bubble_table(str(out), window_s=WINDOW_S)
    assert set(table["word"]) == {w.word for w in vocabulary.WORDS}

    def weighted(col):
        return float((table[col].fillna(0) * table["requests"]).sum() / table["requests"].sum())

    assert weighted("minority_in_search_results") < 0.02, table
    # What users clicked after reformulating, and their rec feeds, reveal the hidden senses.
    # (v2's sparse, position-biased clicks send many dominant-sense users to reformulate as well)
    assert weighted("minority_in_reformulation_clicks") > 0.35, table
    assert weighted("minority_in_rec_feed") > 0.25, table
    assert (table["minority_in_rec_feed"] > table["minority_in_search_results"] + 0.1).mean() > 0.8, table


def test_ground_truth_is_consistent(tiny_world):
    out, _ = tiny_world
    qrels = pq.read_table(out / "eval" / "qrels.parquet").to_pandas()
    assert set(qrels["grade"].unique()) <= {1, 2, 3}
    qr = pq.read_table(out / "eval" / "qr.parquet").to_pandas()
    graded = qr.merge(qrels, on=["query", "video_id"], how="left")
    # QR credits the original query with what the user really wanted: relevant to it in the qrels.
    assert graded["grade"].notna().mean() > 0.9
    videos = set(pq.read_table(S.table_files(str(out), "videos")[0])["video_id"].to_pylist())
    for name in ("qrels", "ct", "qr"):
        assert set(pq.read_table(out / "eval" / f"{name}.parquet")["video_id"].to_pylist()) <= videos


def test_catalog_has_competing_videos_per_sense():
    cat = build_catalog(world_config("small"))
    counts = np.bincount(cat.topic)
    senses = [i for i, w in enumerate(cat.topic_word) if w]
    assert counts[senses].min() >= 100  # far more than K = 100 across a word's senses
    assert len(set(cat.texts)) > 0.95 * len(cat.texts)  # varied titles and captions, not copies


@pytest.mark.ray
def test_generated_world_validates_clean(tiny_world, tmp_path, ray_local):
    from crops_ray.validate import validate_logs

    out, _ = tiny_world
    summaries = validate_logs(str(out), str(tmp_path / "validated"))
    for table, s in summaries.items():
        assert s.conserved and s.quarantined == 0, (table, s)


def test_query_buckets_follow_the_training_log(tiny_world):
    from crops_ray import buckets

    out, _ = tiny_world
    queries = pq.read_table(out / "eval" / "queries.parquet").to_pandas()
    log = pq.read_table(out / "search_log", columns=["request_id", "query"]).to_pandas()
    counted = log.groupby("query")["request_id"].nunique()
    expected = queries["query"].map(counted).fillna(0).astype(int)
    assert (queries["train_requests"] == expected).all()
    assert list(buckets.bucket_of([0, 1, 2, 3, 19, 20, 500])) == [
        "unseen",
        "tail",
        "tail",
        "torso",
        "torso",
        "head",
        "head",
    ]
    assert (queries["bucket"] == buckets.bucket_of(queries["train_requests"])).all()
    # The same rule from the logs alone (what a user's logs get) agrees with the world's truth.
    issued = queries[queries["eval_requests"] > 0]
    from_logs = buckets.query_buckets(str(out), issued["query"].tolist())
    assert (from_logs["bucket"].to_numpy() == issued["bucket"].to_numpy()).all()
    # A long tail: many evaluation queries were typed rarely or never in training.
    assert (issued["bucket"].isin(["tail", "unseen"])).mean() > 0.3
    assert set(issued["kind"]) == {"ambiguous", "sense", "subtopic", "tail"}


def test_vocabulary_gap_and_the_term_based_incumbent():
    from crops_ray.world.generator import _word_pattern

    cfg = world_config("tiny", seed=2)
    cat = build_catalog(cfg)
    gap = np.flatnonzero(cat.word_gap)
    assert 0.15 < len(gap) / sum(1 for t in cat.topic if cat.topic_word[t]) < 0.45
    for v in gap:
        assert not _word_pattern(cat.topic_word[cat.topic[v]]).search(cat.texts[v]), cat.texts[v]
    # The incumbent's candidates hold far fewer of the gap videos than of the videos that name the word.
    found_gap = found_named = total_gap = total_named = 0
    for qi, q in enumerate(cat.queries):
        if q["kind"] != "sense":
            continue
        mine = cat.topic_videos[cat.topic_keys.index(q["topic"])]
        cand = set(cat.candidates[qi].tolist())
        for v in mine:
            if cat.word_gap[v]:
                total_gap += 1
                found_gap += v in cand
            else:
                total_named += 1
                found_named += v in cand
    assert found_named == total_named and found_gap / total_gap < 0.4


def test_requests_show_4_to_10_results_and_clicks_thin_out_with_rank(tiny_world):
    from crops_ray.world.generator import click_probability

    out, _ = tiny_world
    log = pq.read_table(out / "search_log", columns=["request_id", "stage"]).to_pandas()
    shown = log[log["stage"].isin(["clicked", "exposed"])].groupby("request_id").size()
    assert shown.min() >= 4 and shown.max() <= 10 and shown.nunique() >= 5
    cfg = world_config("tiny")
    cat = build_catalog(cfg)
    v = int(cat.topic_videos[0][0])
    intent = (0, int(cat.subtopic[v]), int(cat.angle[v]))
    p = click_probability(cat, cfg, np.repeat(v, 6), intent)  # the same video at ranks 1-6
    assert p[0] > p[1] > p[2] > p[5] and p[0] / p[5] > 4


def test_the_vocabulary_is_data_checked_when_it_loads(tmp_path):
    """vocabulary.yaml holds the world's text; a field of the wrong shape is an error naming it, at load time."""
    import yaml
    from pydantic import ValidationError

    data = yaml.safe_load(open(vocabulary.VOCABULARY_YAML, encoding="utf-8"))
    assert [w["word"] for w in data["words"]] == [w.word for w in vocabulary.WORDS]
    assert isinstance(vocabulary.WORDS[0].senses[0].subtopics, tuple)  # frozen, hashable, as the generator expects
    vocabulary.check_vocabulary()
    del data["words"][0]["senses"][0]["aliases"]
    data["angles"][0]["forms"] = "for beginners"  # a string where a list belongs
    bad = tmp_path / "vocabulary.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ValidationError) as exc:
        vocabulary.load_vocabulary(str(bad))
    where = {".".join(map(str, e["loc"])) for e in exc.value.errors()}
    assert "words.0.senses.0.aliases" in where and "angles.0.forms" in where, where
