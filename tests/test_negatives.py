"""Mined hard negatives (ANCE, ADORE+STAR, TriSampler): each rule on small arrays, then training on the tiny world."""

import copy
import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from crops_ray import schema as S
from crops_ray.encoder import Encoder
from crops_ray.experiment import METHODS, NEGATIVE_BASELINES, TABLE1, mining_config
from crops_ray.hla import build_groups, load_samples
from crops_ray.index import VectorIndex
from crops_ray.negatives import (
    NegativeConfig,
    NegativeMiner,
    labelled_positives,
    quasi_triangle_angle,
    search_pools,
    top_negatives,
    trisampler_weights,
    uniform_negatives,
    weighted_negatives,
)
from crops_ray.plumbing import model_path
from crops_ray.train import (
    DocCache,
    TrainConfig,
    append_candidates,
    collate,
    in_batch_labels,
    in_batch_loss,
)
from crops_ray.train.driver import _run_settings_check
from crops_ray.world.generator import generate_world, world_config


def _samples(rows):
    """rows: (query, video_id, level, source)."""
    q, v, lv, src = zip(*rows)
    columns = {
        "query": list(q),
        "video_id": list(v),
        "text": [f"t{x}" for x in v],
        "level": pa.array(lv, pa.int8()),
        "source": list(src),
        "score": pa.nulls(len(rows), pa.float32()),
    }
    return pa.table(columns, schema=S.SAMPLES_SCHEMA)


# ------------------------------------------------------------------------------------------ the rules


def test_labelled_positives_are_every_level_3_or_above_sample_and_every_click():
    samples = _samples(
        [
            ("q", "a", 4, "clicked"),
            ("q", "b", 3, "exposed"),
            ("q", "c", 2, "ranked"),
            ("q", "d", 1, "filtered"),
            ("q", "e", 5, "reformulation"),
            ("r", "a", 2, "clicked"),
            ("r", "b", 2, "ranked"),
        ]
    )  # a click below level 3 still counts
    got = labelled_positives(samples).to_pylist()
    assert sorted((p["query"], p["video_id"]) for p in got) == [("q", "a"), ("q", "b"), ("q", "e"), ("r", "a")]


def test_search_pools_rank_best_first_and_never_return_an_excluded_row():
    corpus = np.eye(4, dtype=np.float32)[[0, 0, 1, 2, 3, 0]] + np.arange(6)[:, None] * 1e-3
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    index = VectorIndex.build([str(i) for i in range(6)], corpus).index
    query = np.array([[1.0, 0.2, 0, 0]], np.float32)
    ((rows, scores),) = search_pools(index, query, k=4, excluded=[{0, 5}])
    assert rows.tolist() == [1, 2]  # rows 0 and 5 score highest but are excluded
    assert np.all(np.diff(scores) <= 0)
    rng = np.random.default_rng(0)
    assert top_negatives(rows, 2).tolist() == [1, 2]
    drawn = [tuple(sorted(uniform_negatives(np.arange(10), 3, rng).tolist())) for _ in range(300)]
    assert all(len(set(d)) == 3 for d in drawn)  # without replacement
    assert len({x for d in drawn for x in d}) == 10  # every one reachable
    assert uniform_negatives(np.arange(2), 5, rng).size == 2 and uniform_negatives(np.arange(0), 5, rng).size == 0


def test_quasi_triangle_angle_is_the_difference_of_the_two_angles_to_the_query():
    cos = lambda deg: np.cos(np.radians(deg))  # noqa: E731
    np.testing.assert_allclose(quasi_triangle_angle(cos(10), cos([10, 40, 70, 80])), [0, 30, 60, 70], atol=1e-9)
    np.testing.assert_allclose(quasi_triangle_angle(cos(50), cos(0)), 50, atol=1e-9)


def test_trisampler_keeps_the_region_and_prefers_scores_near_the_positive_and_negatives_near_the_positive():
    cos = lambda deg: float(np.cos(np.radians(deg)))  # noqa: E731
    t = 0.05
    # d+ at 20 degrees from q; candidates: 0 at 85 (outside 60), 1 and 2 at the positive's score, 3 far below it.
    cos_q_neg = np.array([cos(85), cos(20), cos(20), cos(35)])
    cos_pos_neg = np.array([0.99, 0.99, cos(20) + 0.01, 0.99])
    w = trisampler_weights(cos_q_neg, cos(20), cos_pos_neg, t)
    assert w[0] == 0  # outside the quasi-triangular region: never drawn
    assert w[1] > w[2] > 0  # same score: the one closer to the positive than to the query wins
    assert w[1] > w[3] > 0  # same closeness to d+: the score nearer the positive's wins
    score_factor = np.exp(-(((cos(35) - cos(20)) / t) ** 2) / 4)
    assert w[3] / w[1] == pytest.approx(score_factor * (0.99 - cos(35)) / (0.99 - cos(20)))
    # every candidate nearer the query than the positive: the score distribution alone, still inside the region
    fallback = trisampler_weights(cos_q_neg, cos(20), np.zeros(4), t)
    assert fallback[0] == 0 and fallback[1] == fallback[2] == 1.0 and 0 < fallback[3] < 1
    # the narrower boundary drops candidate 3 (15 degrees from the positive's angle)
    assert trisampler_weights(cos_q_neg, cos(20), cos_pos_neg, t, max_angle=10)[3] == 0


def test_weighted_sampling_follows_the_weights_and_never_draws_a_zero():
    rng = np.random.default_rng(1)
    pool, weights = np.array([10, 11, 12, 13]), np.array([0.0, 1.0, 3.0, 6.0])
    counts = np.zeros(4)
    for _ in range(2000):
        counts[pool.tolist().index(weighted_negatives(pool, weights, 1, rng)[0])] += 1
    assert counts[0] == 0 and counts[1] < counts[2] < counts[3]
    np.testing.assert_allclose(counts[1:] / counts.sum(), weights[1:] / weights.sum(), atol=0.03)
    assert sorted(weighted_negatives(pool, weights, 9, rng).tolist()) == [11, 12, 13]
    assert weighted_negatives(pool, np.zeros(4), 2, rng).size == 0


def test_configuration_and_the_method_table():
    with pytest.raises(ValueError, match="unknown negatives rule"):
        NegativeConfig(rule="bm25_negatives")
    with pytest.raises(ValueError, match="star_share"):
        NegativeConfig(star_share=1.0)
    with pytest.raises(ValueError, match="doc_tower='frozen'"):
        TrainConfig(negatives={"rule": "ance"})
    cfg = TrainConfig(shared_towers=False, doc_tower="frozen", negatives={"rule": "trisampler", "k": 50})
    assert isinstance(cfg.negatives, NegativeConfig) and cfg.negatives.k == 50
    assert {METHODS[m].negatives for m in NEGATIVE_BASELINES} == {"ance", "star_adore", "trisampler"}
    dpr = METHODS["dpr"]
    assert all(METHODS[m].loss == dpr.loss and METHODS[m].sources == dpr.sources for m in NEGATIVE_BASELINES)
    assert not set(NEGATIVE_BASELINES) & set(TABLE1)  # opt-in


def test_a_run_that_mined_negatives_is_not_resumed_as_another(tmp_path):
    mining_run = TrainConfig(shared_towers=False, doc_tower="frozen", negatives={"rule": "ance"})
    plain = TrainConfig(shared_towers=False, doc_tower="frozen")
    for name, first, then in (("a", mining_run, plain), ("b", plain, mining_run)):
        _run_settings_check(str(tmp_path), name, first)
        (tmp_path / name / "step-00000001").mkdir()
        _run_settings_check(str(tmp_path), name, first)  # the same settings resume
        with pytest.raises(ValueError, match="other settings .*negatives"):
            _run_settings_check(str(tmp_path), name, then)


# ------------------------------------------------------------------------------------- the tiny world


def _tiny_bert(folder: str) -> str:
    """A randomly initialised 1-layer BERT of width 32 with MiniLM's tokenizer: the rules need a real transformer
    query tower, not a good one, and a corpus encoding that takes a fraction of a second."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(model_path("minilm"))
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def mining(tmp_path_factory):
    """The tiny world, a tiny BERT, its frozen corpus encoding (part of the world's) and 32 training groups."""
    root = tmp_path_factory.mktemp("mining")
    model = _tiny_bert(str(root / "bert-tiny"))
    world = str(root / "tiny")
    generate_world(world, world_config("tiny", seed=1), progress=lambda *_: None)
    samples = load_samples(world)[0]
    groups = build_groups(samples).slice(0, 32).to_pylist()  # 4 steps of 8
    # The corpus: every video the batches' queries have samples of, and 300 others (a quarter of the world's).
    videos = pq.read_table(S.table_files(world, "videos"), columns=["video_id", "text"]).to_pandas()
    videos = videos.drop_duplicates("video_id")
    in_batches = pc.is_in(samples["query"], pa.array([g["query"] for g in groups]))
    known = set(samples.filter(in_batches)["video_id"].to_pylist())
    videos = videos[videos["video_id"].isin(known) | videos.index.isin(videos.index[:300])]
    emb = Encoder.from_pretrained(model, shared=False, max_length=32).encode_docs(videos["text"].tolist())
    corpus = str(root / "corpus.parquet")
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])
    table = pa.table({"video_id": videos["video_id"].tolist(), "text": videos["text"].tolist(), "embedding": embedding})
    pq.write_table(table, corpus)
    tcfg = TrainConfig(loss="infonce", shared_towers=False, doc_tower="frozen", max_length=32, doc_embeddings=corpus)
    negatives = mining_config(METHODS["ance"], tcfg, samples, str(root))
    positives = pq.read_table(negatives.positives).to_pandas().groupby("query")["video_id"].agg(set).to_dict()
    return {
        "model": model,
        "corpus": corpus,
        "emb": emb,
        "ids": videos["video_id"].tolist(),
        "positives": positives,
        "groups": groups,
        "negatives": negatives,
    }


def _top(emb, q, k):
    return set(np.argsort(-(emb @ q), kind="stable")[:k].tolist())


@pytest.mark.parametrize("rule", ["ance", "star_adore", "trisampler"])
def test_each_rule_trains_on_the_tiny_world_and_draws_by_its_rule(mining, rule):
    # The whole corpus is the pool (k) and n is large, so a rule that let a labelled positive through would draw one;
    # TriSampler's boundary is narrowed to 2 degrees, about the median angle of this (random) model's candidates.
    steps, batch_size, k, n, max_angle = 4, 8, len(mining["ids"]), 40, 2.0
    refresh = 2 if rule == "ance" else 50  # ance: a second snapshot at step 2; trisampler: the initial model throughout
    cfg = dataclasses.replace(
        mining["negatives"], rule=rule, k=k, num_negatives=n, refresh_every=refresh, max_angle=max_angle
    )
    enc = Encoder.from_pretrained(mining["model"], shared=False, max_length=32)
    enc.freeze_docs()
    enc.train()
    initial = copy.deepcopy(enc).eval()  # the snapshot of the first refresh, and STAR's warm-up model
    miner = NegativeMiner(cfg, temperature=0.05, total_steps=steps, seed=0)
    cache = DocCache(enc)
    cache.prefill(mining["corpus"], "cpu")
    optimizer = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-4)
    emb, ids, row_of = mining["emb"], mining["ids"], {v: i for i, v in enumerate(mining["ids"])}
    before = [p.detach().clone() for p in enc.query_model.parameters()]
    positives_in_reach = drawn = 0
    for step in range(steps):
        groups = mining["groups"][step * batch_size : (step + 1) * batch_size]
        rows = {key: [g[key] for g in groups] for key in ("query", "texts", "video_ids", "levels", "sources")}
        batch = collate(rows, enc, "infonce", tokenize_docs=False)
        q, _ = enc(batch.query_inputs, None)
        picked = miner.negatives(enc, rows, q, step)
        q0 = initial.encode_queries(rows["query"])
        for i, (query, videos, got) in enumerate(zip(rows["query"], rows["video_ids"], picked)):
            labelled = mining["positives"].get(query, set())
            assert not {ids[r] for r in got} & (labelled | set(videos)), "mined a labelled positive or own candidate"
            assert len(got) == len(set(got)) <= n
            drawn += len(got)
            if rule == "trisampler" or step < 2:  # drawn from the top k of the initial model's query embedding
                reach = _top(emb, q0[i], k)
                assert set(got) <= reach
                positives_in_reach += len(reach & {row_of[v] for v in labelled if v in row_of})
            if rule == "star_adore" and step >= 2:  # ADORE: the n best of the step's own embedding, exclusions skipped
                order = np.argsort(-(emb @ q[i].detach().numpy()), kind="stable")[:k]
                banned = labelled | set(videos)
                assert got == [r for r in order if ids[r] not in banned][:n]
            if rule == "trisampler":
                anchor = emb[row_of[videos[0]]]
                assert np.all(quasi_triangle_angle(float(q0[i] @ anchor), emb[got] @ q0[i]) <= max_angle + 1e-3)
        batch = append_candidates(batch, [[(miner.ids[r], miner.texts[r]) for r in p] for p in picked])
        labels = in_batch_labels(
            batch.row_query_key,
            batch.cand_video_key,
            batch.cand_label,
            batch.cand_row,
            batch.cand_query_key,
            batch.cand_video_key,
            batch.cand_label,
        )
        mined_cols = torch.arange(batch.n_docs - sum(map(len, picked)), batch.n_docs)
        assert labels[batch.cand_row[mined_cols], mined_cols].tolist() == [0] * len(mined_cols)  # its query's negative
        d = cache(batch.doc_texts, "cpu")
        out = in_batch_loss(q, d, batch, "infonce", 0.05, num_levels=5)
        assert np.isfinite(out.value)
        out.backward.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert drawn >= steps * batch_size  # at least one negative per query on average
    assert positives_in_reach > 0  # the exclusion was tested: labelled positives were in the top k
    assert miner.refreshes == (2 if rule == "ance" else 1)
    assert any((a - b).abs().max() > 0 for a, b in zip(before, enc.query_model.parameters()))
    assert cache.encoded == 0  # every mined text came from the frozen corpus encoding
