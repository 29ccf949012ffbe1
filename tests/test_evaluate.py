"""Evaluation end to end: BM25 and a dense encoder on the tiny world, Cranfield's grades, the FAISS index."""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from crops_ray.evaluate import EvalConfig, evaluate, load_targets
from crops_ray.index import IndexConfig, VectorIndex
from crops_ray.world.generator import generate_world, world_config
from pipelines.evaluate import main as evaluate_main
from tests.conftest import SHARED

CRANFIELD = os.path.join(SHARED, "data", "cranfield")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "world"
    generate_world(str(out), world_config("tiny", seed=1), progress=lambda *_: None)
    return out


def _check_fractions(metrics):
    for key in ("recall@100_ct", "recall@100_qr", "ndcg@4", "mrr@10"):
        assert 0.0 <= metrics[key] <= 1.0, key


def test_bm25_on_the_world(tiny, tmp_path):
    metrics = evaluate(str(tiny), str(tmp_path / "bm25"), method="bm25", progress=lambda *_: None)
    _check_fractions(metrics)
    assert metrics["recall@10_ct"] <= metrics["recall@50_ct"] <= metrics["recall@100_ct"] <= metrics["recall@1000_ct"]
    saved = json.loads((tmp_path / "bm25" / "metrics.json").read_text())
    assert saved["metrics"]["recall@100_ct"] == metrics["recall@100_ct"]
    per_query = pq.read_table(tmp_path / "bm25" / "per_query.parquet").to_pandas()
    assert len(per_query) == metrics["queries"] and per_query["top10"].map(len).max() == 10


def test_targets_are_optional_but_not_all(tmp_path, tiny):
    os.makedirs(tmp_path / "logs" / "eval")
    os.symlink(tiny / "videos", tmp_path / "logs" / "videos")
    with pytest.raises(FileNotFoundError, match="holds none of"):
        load_targets(str(tmp_path / "logs"))
    os.symlink(tiny / "eval" / "qrels.parquet", tmp_path / "logs" / "eval" / "qrels.parquet")
    t = load_targets(str(tmp_path / "logs"))
    assert t.ct is None and t.qr is None and t.qrels
    with pytest.raises(SystemExit) as e:  # a clear message, exit 2, for a missing model
        evaluate_main(
            ["--logs", str(tmp_path / "logs"), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "no-such-model")]
        )
    assert e.value.code == 2


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_index_kinds_and_round_trip(kind, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"v{i}" for i in range(len(x))]
    index = VectorIndex.build(ids, x, IndexConfig(kind, nprobe=64))
    got, scores = index.search(x[:20], 5)
    assert [row[0] for row in got] == ids[:20]  # each vector finds itself first
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    recall = index.recall_against_exact(x, x[:100], 10)
    assert recall == 1.0 if kind == "flat" else recall > 0.8
    index.save(str(tmp_path / kind))
    again = VectorIndex.load(str(tmp_path / kind))
    assert again.search(x[:3], 5)[0] == got[:3]


@pytest.mark.ray
@pytest.mark.slow
def test_dense_evaluation_beats_chance_and_saves_an_index(tiny, tmp_path, ray_local):
    from crops_ray.embed import EmbedConfig
    from crops_ray.encoder import shallow_copy

    model = shallow_copy("minilm", str(tmp_path / "minilm-2l"), 2)
    cfg = EvalConfig(embed=EmbedConfig(cache_dir=str(tmp_path / "cache"), actor_num_cpus=0.5))
    metrics = evaluate(
        str(tiny), str(tmp_path / "dense"), method="dense", model=model, cfg=cfg, progress=lambda *_: None
    )
    _check_fractions(metrics)
    # A pretrained encoder, even shallow, finds relevant videos far above chance (100 of ~1000 videos = 0.1).
    assert metrics["recall@100_ct"] > 0.3
    assert (
        VectorIndex.load(str(tmp_path / "dense" / "index")).index.ntotal
        == pq.read_metadata(str(next((tiny / "videos").glob("*.parquet")))).num_rows
    )
    assert len([e for e in os.listdir(tmp_path / "cache") if not e.startswith(".")]) == 1  # encoded once and cached
    again = evaluate(
        str(tiny), str(tmp_path / "dense2"), method="dense", model=model, cfg=cfg, progress=lambda *_: None
    )
    assert again["recall@100_ct"] == metrics["recall@100_ct"]


@pytest.mark.skipif(not os.path.isdir(CRANFIELD), reason="../shared/data/cranfield not present")
def test_cranfield_grades_follow_its_readme(tmp_path):
    from crops_ray.adapters.cranfield import convert, grade_of

    assert [grade_of(c) for c in (1, 2, 3, 4, -1, 5)] == [4, 3, 2, 1, 0, 0]  # 1 = complete answer = best
    stats = convert(CRANFIELD, str(tmp_path / "cran"))
    assert stats == {"documents": 1400, "queries": 225, "judgments": 1612, "dropped_judgments": 225}
    qrels = pq.read_table(tmp_path / "cran" / "eval" / "qrels.parquet").to_pandas()
    first = qrels[qrels["query"].str.startswith("what similarity laws must be obeyed")]
    assert dict(zip(first["video_id"], first["grade"]))["cran-184"] == 3  # "1 184 2" in cranqrel
    metrics = evaluate(str(tmp_path / "cran"), str(tmp_path / "bm25"), method="bm25", progress=lambda *_: None)
    assert 0.25 < metrics["ndcg@10"] < 0.6  # BM25 on Cranfield: published nDCG@10 is in this range


def test_a_yaml_section_changes_only_the_settings_it_names(tmp_path):
    from crops_ray.config import load_config
    from crops_ray.experiment import ExperimentConfig

    (tmp_path / "exp.yaml").write_text("train: {max_steps: 300}\ngroups: {group_size: 4}\n")
    cfg = load_config(ExperimentConfig, str(tmp_path / "exp.yaml"))
    assert cfg.train.max_steps == 300 and cfg.groups.group_size == 4
    default = ExperimentConfig()
    assert (cfg.train.doc_tower, cfg.train.shared_towers, cfg.train.batch_size) == (
        default.train.doc_tower,
        default.train.shared_towers,
        default.train.batch_size,
    )
    (tmp_path / "bad.yaml").write_text("train: {doc_tower: frozen, shared_towers: true}\n")
    with pytest.raises(ValueError, match="shared_towers=False"):
        load_config(ExperimentConfig, str(tmp_path / "bad.yaml"))
    with pytest.raises(ValueError, match="unknown setting"):
        load_config(ExperimentConfig, None, {"trian": {}})


def test_baselines_train_on_the_log_itself_and_ablations_add_one_perspective():
    import pyarrow as pa

    from crops_ray.experiment import METHODS, method_samples
    from crops_ray.schema import SAMPLES_SCHEMA

    def table(rows):
        return pa.Table.from_pylist(
            [{"query": q, "video_id": v, "text": v, "level": lv, "source": s, "score": None} for q, v, lv, s in rows],
            schema=SAMPLES_SCHEMA,
        )

    # v1 was clicked AND mined by P1: the engine's samples keep it at level 5 only.
    samples = table(
        [
            ("jaguar", "v1", 5, "reformulation"),
            ("jaguar", "v2", 1, "filtered"),
            ("jaguar", "v3", 4, "recommendation"),
            ("jaguar", "v4", 4, "llm"),
        ]
    )
    log = table([("jaguar", "v1", 4, "clicked"), ("jaguar", "v2", 1, "filtered"), ("jaguar", "v3", 1, "filtered")])

    def rows(t):
        return sorted(zip(t["video_id"].to_pylist(), t["level"].to_pylist(), t["source"].to_pylist()))

    assert rows(method_samples(samples, METHODS["dpr"], log)) == [
        ("v1", 4, "clicked"),
        ("v2", 1, "filtered"),
        ("v3", 1, "filtered"),
    ]
    assert rows(method_samples(samples, METHODS["crops"], log)) == rows(samples)
    assert rows(method_samples(samples, METHODS["crops_p2"], log)) == [
        ("v1", 4, "clicked"),
        ("v2", 1, "filtered"),
        ("v3", 4, "recommendation"),
    ]
    binary = method_samples(samples, METHODS["crops_binary"], log)
    assert set(binary["source"].to_pylist()) == {"clicked", "filtered"} and rows(binary)[0] == ("v1", 5, "clicked")
    assert rows(method_samples(samples, METHODS["dpr"])) == [
        ("v2", 1, "filtered")
    ]  # without the log: the click is lost
