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


def _frames(out):
    truth = pq.read_table(out / "eval" / "video_truth.parquet").to_pandas()
    search = pq.read_table(out / "search_log").to_pandas().merge(truth, on="video_id")
    rec = pq.read_table(out / "rec_log").to_pandas().merge(truth, on="video_id")
    return truth, search, rec


def test_filter_bubble_minority_senses_hidden_from_search_but_found_elsewhere(tmp_path):
    out = tmp_path / "w"
    generate_world(str(out), world_config("tiny", seed=3, users=400), progress=lambda *_: None)
    truth, search, rec = _frames(out)
    words = {w.word for w in vocabulary.WORDS}
    bare = search[search["query"].isin(words) & (search["word"] == search["query"])]
    shown = bare[bare["stage"].isin(["clicked", "exposed"])]
    minority_shown = (~shown["dominant"]).mean()
    assert minority_shown < 0.02, f"minority senses exposed too often: {minority_shown:.3f}"

    # Reformulation clicks: a later request of the same user within 90 s, credited to the bare word.
    requests = search[["request_id", "user_id", "query", "ts"]].drop_duplicates("request_id").sort_values(["user_id", "ts"])
    nxt = requests.groupby("user_id").shift(-1)
    pairs = requests.assign(next_request=nxt["request_id"], next_query=nxt["query"], gap=nxt["ts"] - requests["ts"])
    reform = pairs[pairs["query"].isin(words) & (pairs["gap"] <= WINDOW_S) & (pairs["next_query"] != pairs["query"])]
    clicks = search[search["stage"] == "clicked"][["request_id", "video_id", "word", "dominant"]]
    after = reform.merge(clicks, left_on="next_request", right_on="request_id")
    after = after[after["word"] == after["query"]]
    assert len(after) > 0 and (~after["dominant"]).mean() > 0.5, "reformulation clicks should reveal minority senses"

    # Rec feed of the users who typed a bare word holds minority-sense videos of that word.
    searchers = bare[["user_id", "query"]].drop_duplicates()
    feed = rec.merge(searchers, on="user_id")
    feed = feed[feed["word"] == feed["query"]]
    never_shown = set(feed[~feed["dominant"]]["video_id"]) - set(shown["video_id"])
    assert len(never_shown) >= 10, "rec feeds should carry minority-sense videos search never showed"


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
