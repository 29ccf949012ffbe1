"""The alpha sweep: the build's scores thresholded again at each alpha, never re-scored. A synthetic build checks the
counting, the report and the downstream wiring in a second; the tiny world's build (the engine tests' fixture) checks
that the build's alpha reproduces build_data exactly, against its own stats and samples."""

import json
import os
from dataclasses import asdict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from crops_ray import alpha_sweep as AS
from crops_ray.discriminator import DiscriminatorConfig
from crops_ray.engine import assemble as A
from crops_ray.engine.build import EngineConfig
from pipelines.alpha_sweep import main as sweep_main

STORED = pa.schema([f for f in A.CANDIDATES_SCHEMA if f.name not in AS.LABEL_FLAGS])


def _synthetic_build(root, n=300, seed=0):
    """A build_data output of ``n`` (query, video) pairs with P1/P2 proposals, theta and gate scores, labelled at
    alpha 0.6 by the engine's own rule, and qrels whose relevance grows with theta (in ``root``_eval)."""
    rng = np.random.default_rng(seed)
    rows, grades = [], []
    for i in range(n):
        p1, p2 = i % 4 in (1, 3), i % 4 in (2, 3)  # log only, P1, P2, both
        row = {
            "query": f"q{i % 17}",
            "video_id": f"v{i}",
            "text": f"video {i}",
            "log_level": None,
            "log_source": None,
            "clicks": 0,
            "reformulation": p1,
            "reformulated_queries": [],
            "reformulation_users": int(p1),
            "recommendation": p2,
            "recommendation_users": int(p2),
            "needs_score": p1 or p2,
            "score": None,
            "raw_score": None,
            "reformulation_theta": None,
            "recommendation_theta": None,
            "gate_score": None,
        }
        if not (p1 or p2) or rng.random() < 0.3:
            stages = ((1, "filtered"), (2, "ranked"), (3, "exposed"), (4, "clicked"))
            row["log_level"], row["log_source"] = stages[i % 4]
        if p1 or p2:  # one theta for both sources here (the engine's may differ per source)
            row["score"] = float(rng.random())
            row["reformulation_theta"] = row["score"] if p1 else None
            row["recommendation_theta"] = row["score"] if p2 else None
            row["gate_score"] = float(rng.random()) if p1 else None
        rows.append(row)
        relevant = rng.random() < (row["score"] if row["score"] is not None else 0.5)
        grades.append(2 * int(relevant) + int(rng.integers(0, 2)))
    cfg = EngineConfig(sources=("p1", "p2"), discriminator=DiscriminatorConfig())
    stored = pa.Table.from_pylist(rows, schema=STORED)
    labelled = A.label_candidates(stored, alpha=0.6, gate="discriminator", gate_threshold=0.3)
    os.makedirs(f"{root}/candidates")
    pq.write_table(labelled.slice(0, n // 2), f"{root}/candidates/part-0.parquet")  # two files: counts add up
    pq.write_table(labelled.slice(n // 2), f"{root}/candidates/part-1.parquet")
    kept = {c: int(pc.sum(labelled[f"{c}_kept"]).as_py()) for c in ("reformulation", "recommendation")}
    with open(f"{root}/stats.json", "w") as f:
        json.dump({"config": asdict(cfg), "sources": {c: {"kept": k} for c, k in kept.items()}}, f, default=str)
    os.makedirs(f"{root}_eval")
    qrels = stored.select(["query", "video_id"]).append_column("grade", pa.array(grades))
    pq.write_table(qrels, f"{root}_eval/qrels.parquet")
    return pd.DataFrame(rows).assign(grade=grades, gate_pass=labelled["gate_pass"].to_pylist())


def _direct(frame: pd.DataFrame, alpha: float) -> dict:
    """Kept counts, precision and recall per source, straight from the definition (not the engine's code)."""
    rel = frame["grade"] >= 2
    above = frame["score"].fillna(-1) > alpha
    out = {}
    for short, column, kept in (
        ("p1", "reformulation", frame["reformulation"] & frame["gate_pass"] & above),
        ("p2", "recommendation", frame["recommendation"] & above),
    ):
        proposed = frame[column]
        out[f"{short}_kept"] = int(kept.sum())
        out[f"{short}_precision"] = rel[kept].mean() if kept.any() else None
        out[f"{short}_recall"] = kept[proposed & rel].mean() if (proposed & rel).any() else None
    return out


def _check_rows(rows, frame, build_kept):
    """Counts never grow with alpha, the build's alpha gives the build's counts, quality matches the definition."""
    for short in ("p1", "p2"):
        kept = [r[f"{short}_kept"] for r in rows]
        assert kept == sorted(kept, reverse=True) and kept[0] > kept[-1], short
    assert {k: v for r in rows if r["alpha"] == 0.6 for k, v in r.items() if k in ("p1_kept", "p2_kept")} == build_kept
    for row in rows:
        for key, value in _direct(frame, row["alpha"]).items():
            assert row[key] == (pytest.approx(value, abs=1e-4) if value is not None else None), (row["alpha"], key)


def test_parse_alphas():
    assert AS.parse_alphas(None) == AS.DEFAULT_ALPHAS
    assert AS.parse_alphas("0.7, 0.5,0.7") == (0.5, 0.7)
    for bad in ("0.5,1.0", "0", "x", ""):
        with pytest.raises(ValueError):
            AS.parse_alphas(bad)


def test_sweep_of_a_synthetic_build_counts_and_quality(tmp_path):
    frame = _synthetic_build(tmp_path / "data")
    result = AS.run_sweep(
        str(tmp_path / "data"),
        str(tmp_path / "out"),
        AS.DEFAULT_ALPHAS,
        str(tmp_path / "data_eval"),
        progress=lambda *_: None,
    )
    _check_rows(result["rows"], frame, {"p1_kept": result["build_kept"]["p1"], "p2_kept": result["build_kept"]["p2"]})
    assert result["build_alpha"] == 0.6 and result["downstream"] is None
    at = {r["alpha"]: r for r in result["rows"]}
    # no P3 and every pair has a level or a kept source at the lowest alpha: samples shrink with alpha too
    assert at[0.3]["samples"] >= at[0.6]["samples"] >= at[0.9]["samples"]
    for row in result["rows"]:  # level 5 outranks everything: every kept P1 pair is a reformulation sample
        by = row["samples_by_source_level"]
        assert by.get("reformulation:5", 0) == row["p1_kept"] and by.get("recommendation:4", 0) <= row["p2_kept"]
    samples = AS.alpha_samples(str(tmp_path / "data"), AS.read_build(str(tmp_path / "data"))[1], 0.6)
    stored = pq.read_table(str(tmp_path / "data" / "candidates"))
    assert samples.sort_by([("query", "ascending"), ("video_id", "ascending")]).equals(
        A.to_samples(stored, EngineConfig().levels).sort_by([("query", "ascending"), ("video_id", "ascending")])
    )
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert files == {"alpha_sweep.json", "alpha_sweep.md", "alpha_sweep.png"}
    md = (tmp_path / "out" / "alpha_sweep.md").read_text()
    assert "0.6 (build)" in md and "P2 precision" in md and "mined F1" in md
    assert json.loads((tmp_path / "out" / "alpha_sweep.json").read_text())["rows"][0]["alpha"] == 0.3


def test_without_ground_truth_the_sweep_reports_counts_only(tmp_path):
    frame = _synthetic_build(tmp_path / "data")
    result = AS.run_sweep(str(tmp_path / "data"), str(tmp_path / "out"), (0.4, 0.6), None, progress=lambda *_: None)
    assert [r["p2_kept"] for r in result["rows"]] == [_direct(frame, a)["p2_kept"] for a in (0.4, 0.6)]
    assert "p1_precision" not in result["rows"][0]
    md = (tmp_path / "out" / "alpha_sweep.md").read_text()
    assert "P2 precision" not in md and "recall" not in md  # no truth, no true precision or recall
    # The logs' own estimate (the kept pairs' mean theta) is there, and it rises with alpha.
    est = [r["p2_estimated_precision"] for r in result["rows"]]
    kept = frame[frame["recommendation"] & (frame["score"] > 0.6)]["score"]
    assert "P2 est. precision (logs)" in md and est[0] < est[1] == pytest.approx(kept.mean(), abs=1e-4)


def test_downstream_trains_crops_once_per_alpha_on_that_alphas_samples(tmp_path, monkeypatch):
    """run_method replaced by a recorder (no training here): each alpha gets its own samples and folder, the paired CI
    is against the build's alpha, and --reuse reads results back instead of training."""
    import crops_ray.experiment as X

    _synthetic_build(tmp_path / "data")
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    cfg = AS.read_build(data)[1]
    seen = {}

    def fake_run_method(method, logs, samples, folder, exp_cfg, seed, progress=print, log=None):
        alpha = float(folder.split("alpha-")[1].split("/")[0])
        seen[alpha] = (method.name, samples.num_rows, logs)
        pairs = np.random.default_rng(0).integers(1, 4, size=60)  # the same targets for every run
        rng = np.random.default_rng(int(alpha * 10))
        hits = np.minimum(pairs, rng.binomial(pairs, 0.4 + 0.3 * alpha))  # higher alpha finds more, here
        per = pd.DataFrame(
            {
                "query": [f"q{i}" for i in range(60)],
                "hits@100_ct": hits,
                "pairs_ct": pairs,
                "hits@100_qr": hits,
                "pairs_qr": pairs,
                "ndcg@4": hits / pairs,
            }
        )
        os.makedirs(f"{folder}/eval", exist_ok=True)
        per.to_parquet(f"{folder}/eval/per_query.parquet")
        recall = hits.sum() / pairs.sum()
        metrics = {"recall@100_ct": recall, "recall@100_qr": recall, "ndcg@4": float((hits / pairs).mean())}
        with open(f"{folder}/result.json", "w") as f:
            json.dump({"metrics": metrics}, f)
        return {"metrics": metrics}

    monkeypatch.setattr(X, "run_method", fake_run_method)
    args = {"logs": "LOGS", "exp_cfg": None, "seed": 0, "log": None, "reuse": False}
    result = AS.run_sweep(data, out, (0.6, 0.8), None, downstream_args=args, progress=lambda *_: None)
    assert {a: s[1] for a, s in seen.items()} == {a: AS.alpha_samples(data, cfg, a).num_rows for a in (0.6, 0.8)}
    assert {s[0] for s in seen.values()} == {"crops"} and os.path.isdir(f"{out}/alpha-0.8/crops")
    rows = {r["alpha"]: r for r in result["rows"]}
    assert "recall@100_ct_vs_reference" not in rows[0.6]  # the reference itself
    versus = rows[0.8]["recall@100_ct_vs_reference"]
    assert versus["diff"] == pytest.approx(rows[0.8]["recall@100_ct"] - rows[0.6]["recall@100_ct"])
    md = (tmp_path / "out" / "alpha_sweep.md").read_text()
    assert "CroPS per alpha" in md and "R@100 QR" in md and "spread over alphas" in md
    monkeypatch.setattr(X, "run_method", lambda *a, **k: pytest.fail("trained again despite --reuse"))
    again = AS.downstream(data, cfg, (0.6, 0.8), out=out, progress=lambda *_: None, **{**args, "reuse": True})
    assert [again[a]["recall@100_ct"] for a in (0.6, 0.8)] == [rows[a]["recall@100_ct"] for a in (0.6, 0.8)]


def test_the_pipeline_refuses_bad_inputs_with_exit_code_2(tmp_path, capsys):
    _synthetic_build(tmp_path / "data")
    data = str(tmp_path / "data")
    for argv, message in (
        (["--data", data, "--out", f"{data}/sweep"], "lies inside the input"),
        (["--data", data, "--out", data], "is the input"),
        (["--data", data, "--out", str(tmp_path)], "contains the input"),
        (["--data", str(tmp_path / "data_eval"), "--out", str(tmp_path / "o1")], "not a build_data output"),
        (["--data", data, "--out", str(tmp_path / "o2"), "--alphas", "0.6,1.2"], "(0, 1)"),
        (["--data", data, "--out", str(tmp_path / "o3"), "--downstream"], "--downstream needs --logs"),
        (["--data", data, "--out", str(tmp_path / "o4"), "--eval", data], "no judgments"),
    ):
        with pytest.raises(SystemExit) as exit_:
            sweep_main(argv)
        assert exit_.value.code == 2, argv
        assert message in capsys.readouterr().err, argv
    assert sorted(os.listdir(data)) == ["candidates", "stats.json"]


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_of_the_tiny_world_reproduces_build_data_at_its_alpha(tiny_engine, tmp_path, monkeypatch):
    """On the engine's own output: no model is loaded, alpha 0.6 gives build_data's kept counts, precision and
    samples, counts never grow with alpha, and precision/recall match a direct computation from the judgments."""
    import transformers

    import crops_ray.discriminator as D
    from crops_ray.discriminator import scoring
    from crops_ray.engine import build as B

    def boom(*_, **__):
        raise AssertionError("the sweep loaded a model or scored a pair")

    for module in (D, B, scoring):
        monkeypatch.setattr(module, "score_dataset", boom)
    for module in (B,):
        monkeypatch.setattr(module, "train_gate", boom)
        monkeypatch.setattr(module, "calibrate_gate", boom)
    for module in (D, scoring):
        monkeypatch.setattr(module, "Discriminator", boom)
    monkeypatch.setattr(D, "DiscriminatorScorer", boom)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", boom)
    root, stats, samples = tiny_engine
    result = sweep_main(["--data", str(root / "out"), "--logs", str(root / "world"), "--out", str(tmp_path / "sweep")])
    assert result["ground_truth"] == str(root / "world" / "eval")
    build_kept = {
        "p1_kept": stats["sources"]["reformulation"]["kept"],
        "p2_kept": stats["sources"]["recommendation"]["kept"],
    }
    cands = pq.read_table(str(root / "out" / "candidates")).to_pandas()
    judged = root / "world" / "eval" / "judgments.parquet"  # every query the world typed; qrels: the evaluation's
    judged = judged if judged.exists() else judged.with_name("qrels.parquet")
    grades = pq.read_table(str(judged), columns=["query", "video_id", "grade"]).to_pandas()
    grades = grades.groupby(["query", "video_id"], as_index=False)["grade"].max()
    frame = cands.merge(grades, on=["query", "video_id"], how="left").fillna({"grade": 0})
    _check_rows(result["rows"], frame, build_kept)
    at = {r["alpha"]: r for r in result["rows"]}
    for short, source in (("p1", "reformulation"), ("p2", "recommendation")):
        assert at[0.6][f"{short}_precision"] == stats["evaluation"]["sources"][source]["precision"]
        assert at[0.6][f"{short}_recall"] == stats["evaluation"]["sources"][source]["recall_within_candidates"]
    assert at[0.6]["mined_precision"] == stats["evaluation"]["mined_precision"]
    assert at[0.6]["samples_by_source_level"] == stats["samples"]["by_source_level"]
    again = AS.alpha_samples(str(root / "out"), AS.read_build(str(root / "out"))[1], 0.6).to_pandas()
    key = ["query", "video_id", "level", "source"]
    assert again[key].sort_values(key).values.tolist() == samples[key].sort_values(key).values.tolist()
