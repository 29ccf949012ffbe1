"""The semantic discriminator: calibration maths, labelled sets, the real MiniLM model, and the Ray Data stage."""

import json

import numpy as np
import pyarrow as pa
import pytest

from crops_ray.discriminator import (
    Calibration,
    Discriminator,
    DiscriminatorConfig,
    fit_logistic,
    precision_recall,
    query_split,
    read_labelled_pairs,
    score_dataset,
)
from crops_ray.world.labelled_pairs import world_labelled_pairs


def test_fit_logistic_recovers_known_parameters():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.2, 0.9, 20_000)
    y = rng.random(20_000) < 1 / (1 + np.exp(-(8.0 * x - 3.0)))
    a, b = fit_logistic(x, y)
    assert abs(a - 8.0) < 0.5 and abs(b + 3.0) < 0.3
    with pytest.raises(ValueError, match="both"):
        fit_logistic(x, np.ones_like(x))


def test_precision_recall_and_calibration_file(tmp_path):
    p, r = precision_recall(np.array([0.9, 0.7, 0.2, 0.65]), np.array([1, 0, 1, 1]), alpha=0.6)
    assert (p, r) == (2 / 3, 2 / 3)
    cal = Calibration(a=10.0, b=-3.0, model="m", kind="bi-encoder", source="s", labelled_pairs=10, positives=5)
    assert cal.theta(np.array([0.3]))[0] == pytest.approx(0.5)
    cal.save(str(tmp_path / "cal.json"))
    assert Calibration.load(str(tmp_path / "cal.json")) == cal
    (tmp_path / "bad.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a discriminator calibration"):
        Calibration.load(str(tmp_path / "bad.json"))


def test_query_split_is_stable_and_complementary():
    queries = [f"q{i}" for i in range(200)]
    fit, held = query_split(queries, heldout=False), query_split(queries, heldout=True)
    assert (fit ^ held).all() and 60 < held.sum() < 140
    assert (query_split(queries, heldout=True) == held).all()


def test_labelled_pairs_file_is_checked(tmp_path):
    good = tmp_path / "pairs.csv"
    good.write_text("query,text,label\njaguar,Jaguar cubs swimming,1\njaguar,Pasta carbonara recipe,0\n")
    t = read_labelled_pairs(str(good))
    assert t.column_names == ["query", "text", "label"] and t["label"].to_pylist() == [1, 0]
    (tmp_path / "nolabel.csv").write_text("query,text\njaguar,x\n")
    with pytest.raises(ValueError, match="missing"):
        read_labelled_pairs(str(tmp_path / "nolabel.csv"))
    (tmp_path / "badlabel.csv").write_text("query,text,label\njaguar,x,2\n")
    with pytest.raises(ValueError, match="0 or 1"):
        read_labelled_pairs(str(tmp_path / "badlabel.csv"))
    with pytest.raises(FileNotFoundError):
        read_labelled_pairs(str(tmp_path / "absent.parquet"))


def test_world_labelled_pairs_are_balanced_and_split_by_query(tmp_path):
    from crops_ray.world.generator import generate_world, world_config

    generate_world(str(tmp_path / "w"), world_config("tiny", users=5), progress=lambda *_: None)
    fit = world_labelled_pairs(str(tmp_path / "w"), 600, heldout=False)
    held = world_labelled_pairs(str(tmp_path / "w"), 600, heldout=True)
    assert 0.4 < np.mean(fit["label"].to_numpy()) < 0.6
    assert not set(fit["query"].to_pylist()) & set(held["query"].to_pylist())


@pytest.fixture(scope="module")
def disc():
    return Discriminator(DiscriminatorConfig(kind="bi-encoder", encode_batch_size=8))


def test_real_model_ranks_related_text_higher_and_encodes_each_text_once(disc):
    queries = ["jaguar big cat", "jaguar big cat", "python list comprehension"]
    texts = [
        "A jaguar stalks caimans on the river bank in the Pantanal.",
        "Carbonara with guanciale and pecorino.",
        "Python list comprehensions explained in one minute.",
    ]
    raw = disc.raw_scores(queries, texts)
    assert raw[0] > raw[1] + 0.2 and raw[2] > raw[1] + 0.2
    before = disc.texts_encoded
    again = disc.raw_scores(queries, texts)
    assert disc.texts_encoded == before  # every query and text came from the cache
    np.testing.assert_allclose(raw, again)
    with pytest.raises(ValueError):
        disc.raw_scores(["a"], ["b", "c"])
    with pytest.raises(RuntimeError, match="calibration"):
        disc.theta(["a"], ["b"])


def test_user_labelled_pairs_train_and_calibrate_the_gate(tmp_path):
    """A team's own labelled pairs are the preferred source: the gate trains on half of their queries (here a
    zero-shot bi-encoder, no training) and is calibrated on the other half, never on the logs' labels."""
    import pyarrow.parquet as pq

    from crops_ray.discriminator.gate import calibrate_gate, train_gate

    topics = {
        "jaguar big cat": "A jaguar stalks its prey along the riverbank at night.",
        "python programming": "Writing Python functions and classes for beginners.",
        "sourdough bread": "Feeding a sourdough starter and baking a crusty loaf.",
        "electric guitar": "Learning power chords on an electric guitar.",
        "slap bass": "Slap bass technique for beginners.",
        "ford mustang": "A 1967 Ford Mustang restoration.",
    }
    rows = [{"query": q, "text": t, "label": int(q == tq)} for q in topics for tq, t in topics.items()]
    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "pairs.parquet"))
    cfg = DiscriminatorConfig(kind="bi-encoder", fine_tune=False, labelled_pairs=str(tmp_path / "pairs.parquet"))
    model_dir, evidence, info = train_gate(cfg, None, None, progress=lambda *_: None)
    assert evidence is None and info["labels"].endswith("pairs.parquet") and model_dir.endswith("model")
    disc = Discriminator(cfg)
    scored = {"query": ["jaguar big cat"] * 2, "video_id": ["a", "b"], "raw": [0.9, 0.1]}
    import pandas as pd

    cal, cinfo = calibrate_gate(cfg, model_dir, pd.DataFrame(scored), None, None, disc.raw_scores, 0.6)
    assert cal.a > 0 and cal.source.endswith("pairs.parquet") and cinfo["calibration_pairs"] > 0


def test_the_gates_weights_are_trained_once_and_loaded_through_its_calibration(tmp_path):
    """Training a gate (a 1-layer copy, for speed) lands in the cache under its labels' content; the same labels
    find it there; scoring loads the weights the calibration names."""
    from crops_ray.discriminator.gate import train_model
    from crops_ray.encoder import shallow_copy

    small = shallow_copy("minilm", str(tmp_path / "m1"), num_layers=1)
    rows = [{"query": q, "text": f"{t} video", "label": int(q == t)} for q in ("a b", "c d") for t in ("a b", "c d")]
    cfg = DiscriminatorConfig(model=small, fine_tune_batch_size=2, cache_dir=str(tmp_path / "cache"))
    said = []
    folder = train_model(cfg, pa.Table.from_pylist(rows), progress=said.append)
    assert folder.startswith(str(tmp_path / "cache")) and any("epoch 1/1" in m for m in said)
    again = []
    assert train_model(cfg, pa.Table.from_pylist(rows), progress=again.append) == folder
    assert not any("epoch" in m for m in again) and any("cached" in m for m in again)
    other = train_model(cfg, pa.Table.from_pylist(rows[:3]), progress=lambda *_: None)
    assert other != folder  # other labels, other weights
    cal = Calibration(a=1.0, b=0.0, model=folder, kind="cross-encoder", source="t", labelled_pairs=4, positives=2)
    disc = Discriminator(DiscriminatorConfig(kind="bi-encoder"), cal)  # the calibration's kind wins
    assert disc.model_dir == folder and disc.cfg.kind == "cross-encoder"
    assert disc.theta(["a b"], ["a b video"]).shape == (1,)


@pytest.mark.ray
def test_actor_pool_stage_matches_the_plain_model(ray_local, disc):
    import ray.data

    cal = Calibration(
        a=10.0, b=-3.0, model=disc.model_dir, kind="bi-encoder", source="test", labelled_pairs=1, positives=1
    )
    rows = [
        {"query": q, "text": t, "score_me": i % 3 != 0, "others": ["jaguar cat"] if i % 2 else []}
        for i, (q, t) in enumerate(
            [
                ("jaguar", "Jaguar cubs in the Pantanal."),
                ("jaguar", "Jaguar E-type restoration."),
                ("python", "Python decorators explained."),
                ("python", "Ball python feeding day."),
                ("bass", "Slap bass lesson."),
                ("bass", "Largemouth bass fishing."),
            ]
            * 5
        )
    ]
    cfg = DiscriminatorConfig(kind="bi-encoder", batch_size=7)
    out = score_dataset(
        ray.data.from_items(rows).repartition(3), cfg, cal, mask_column="score_me", gate_column="others"
    ).take_all()
    assert len(out) == len(rows)
    disc.calibration = cal
    for r in out:
        if r["score_me"]:
            assert r["score"] == pytest.approx(float(disc.theta([r["query"]], [r["text"]])[0]), abs=1e-5)
        else:
            assert r["score"] is None or np.isnan(r["score"])
        if r["others"]:
            assert r["gate_score"] == pytest.approx(float(disc.raw_scores([r["query"]], ["jaguar cat"])[0]), abs=1e-5)


def test_a_calibration_whose_weights_are_gone_is_an_error_not_the_base_model(tmp_path, monkeypatch):
    """Fitted on a fine-tuned folder that another node or a wiped cache no longer has: refuse, naming the folder,
    in the library, the engine's check and the Serve builder; a packaged alias still resolves."""
    from crops_ray.discriminator import Calibration, Discriminator, calibrated_weights
    from crops_ray.index import VectorIndex
    from serve.app import build_app

    gone = str(tmp_path / "discriminators" / "ft-1234")
    cal = Calibration(a=10.0, b=-4.0, model=gone, kind="bi-encoder", source="world:1", labelled_pairs=10, positives=5)
    with pytest.raises(FileNotFoundError, match="ft-1234"):
        Discriminator(DiscriminatorConfig(kind="bi-encoder"), cal)
    assert calibrated_weights(Calibration(**{**cal.__dict__, "model": "minilm"}), DiscriminatorConfig()).endswith(
        "model"
    )
    cal.save(str(tmp_path / "cal.json"))
    VectorIndex.build(["a"], np.eye(1, 4, dtype=np.float32)).save(str(tmp_path / "index"))
    with pytest.raises(FileNotFoundError, match="ft-1234"):
        build_app({"index": str(tmp_path / "index"), "calibration": str(tmp_path / "cal.json")})
