"""Runs tracked in MLflow: the tiny demo's runs read back with mlflow.search_runs (each method and seed, the loss's
step history, the Table-1 numbers, the report), MLFLOW_TRACKING_URI honoured, and a store that fails costs a
warning, never the work."""

import json
import logging
import socket
import time

import pytest
import yaml

from crops_ray import tracking as T


def _search(monkeypatch, uri: str):
    """Every run of the default experiment in the store at ``uri``, read the way a user would."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return mlflow.search_runs(experiment_names=[T.EXPERIMENT])


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    return [(m.step, m.value) for m in sorted(MlflowClient(uri).get_metric_history(run_id, key), key=lambda m: m.step)]


def _artifacts(uri: str, run_id: str, folder: str | None = None) -> set[str]:
    from mlflow import MlflowClient

    return {a.path for a in MlflowClient(uri).list_artifacts(run_id, folder)}


def test_names_and_settings_become_what_mlflow_accepts():
    assert T.metric_key("recall@100_ct") == "recall_at_100_ct" and T.metric_key("ndcg@4") == "ndcg_at_4"
    assert T.flatten({"train": {"lr": 5e-5, "negatives": {"rule": "none"}}, "sources": ("clicked", "exposed")}) == {
        "train.lr": "5e-05",
        "train.negatives.rule": "none",
        "sources": "['clicked', 'exposed']",
    }
    assert T.numbers({"loss": 1.5, "step": 3, "nonfinite": True, "model": "x", "per_level": {"1": 2.0}}) == {
        "loss": 1.5,
        "step": 3.0,
    }


def test_the_default_store_lives_under_out(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    out = tmp_path / "out"
    uri = T.tracking_uri(str(out))
    assert uri == f"sqlite:///{out / T.STORE_FILE}"
    (tmp_path / "note.md").write_text("hello")
    with T.start_run(str(out), "parent", tags={"pipeline": "unit"}) as parent:
        with parent.child("child", tags={"method": "m"}, params={"train": {"lr": 1e-4}}) as child:
            for step in (1, 2):
                child.log_metrics({"loss": 1.0 / step, "flag": True}, step=step)
            child.log_artifact(str(tmp_path / "note.md"))
    runs = _search(monkeypatch, uri)
    kid = runs[runs["tags.method"] == "m"].iloc[0]
    assert kid["tags.mlflow.parentRunId"] == parent.run_id and kid["params.train.lr"] == "0.0001"
    assert _history(uri, kid["run_id"], "loss") == [(1, 1.0), (2, 0.5)] and "metrics.flag" not in runs
    assert (out / T.ARTIFACTS_DIR / kid["run_id"] / "artifacts" / "note.md").read_text() == "hello"
    assert set(runs["status"]) == {"FINISHED"}


def test_a_store_that_fails_costs_one_warning_not_the_work(tmp_path, monkeypatch, caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger=T.__name__):
        run = T.start_run(str(tmp_path), "unreachable")
    assert run is T.NO_RUN and time.perf_counter() - started < T.PROBE_TIMEOUT_S
    assert "does not answer" in caplog.text and not (tmp_path / T.STORE_FILE).exists()
    run.log_metrics({"loss": 1.0}, step=1)  # a no-op, not an error
    assert run.child("x") is T.NO_RUN

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=T.__name__):
        run = T.start_run(str(tmp_path), "refused", params={"lr": 1})
        run.log_params({"lr": 2})  # MLflow refuses a changed param: warned, the run logs nothing more
        run.log_metrics({"loss": 1.0}, step=1)
        run.end()
    assert caplog.text.count("logs nothing more") == 1 and not run.active
    assert "metrics.loss" not in _search(monkeypatch, T.tracking_uri(str(tmp_path)))


@pytest.mark.ray
@pytest.mark.slow
def test_the_tiny_demo_leaves_runs_that_search_runs_reads_back(tmp_path, ray_local, monkeypatch):
    """One seed, BM25 and DPR (3 steps of a 1-layer MiniLM; the data engine mines nothing): a demo run, one run per
    method and seed nested in it, with their Table-1 numbers, the loss's step history and the report; read back
    with --reuse, the same runs go to the store MLFLOW_TRACKING_URI names instead of OUT's."""
    from crops_ray.encoder import shallow_copy
    from crops_ray.experiment import METHODS
    from pipelines.demo import main as demo

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    model = shallow_copy("minilm", str(tmp_path / "minilm-1l"), num_layers=1)
    cfg, engine = tmp_path / "cfg.yaml", tmp_path / "engine.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"model": model, "max_steps": 3, "batch_size": 8, "log_every": 1}}))
    gate = {"kind": "bi-encoder", "fine_tune": False, "model": model, "similarity_model": model, "max_length": 32}
    engine.write_text(yaml.safe_dump({"sources": [], "discriminator": gate}))
    out = tmp_path / "demo"
    args = ["--scale", "tiny", "--seeds", "0", "--methods", "bm25,dpr", "--no-online", "--out", str(out)]
    args += ["--config", str(cfg), "--engine-config", str(engine)]
    demo(args)

    uri = f"sqlite:///{out / T.STORE_FILE}"
    runs = _search(monkeypatch, uri)
    assert len(runs) == 3 and set(runs["status"]) == {"FINISHED"}
    parent = runs[runs["tags.pipeline"] == "demo"].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]].set_index("tags.method")
    assert sorted(children.index) == ["bm25", "dpr"] and set(children["tags.seed"]) == {"0"}
    for method in ("bm25", "dpr"):
        result = json.loads((out / "seed-0" / method / "result.json").read_text())
        for metric in ("recall@100_ct", "recall@100_qr", "ndcg@4"):
            assert children.loc[method, f"metrics.{T.metric_key(metric)}"] == pytest.approx(result["metrics"][metric])
        assert {"result.json", "eval"} <= _artifacts(uri, children.loc[method, "run_id"])
        assert _artifacts(uri, children.loc[method, "run_id"], "eval") == {"eval/metrics.json"}
    dpr = children.loc["dpr"]
    trained = json.loads((out / "seed-0" / "dpr" / "train_metrics.json").read_text())
    loss = _history(uri, dpr["run_id"], "loss")
    assert [s for s, _ in loss] == [1, 2, 3] and loss[-1][1] == pytest.approx(trained["final_loss"])
    lr = [v for _, v in _history(uri, dpr["run_id"], "lr")]
    assert len(lr) == 3 and lr[0] > lr[1] > lr[2] > 0  # the linear decay after the warm-up
    assert all(v > 0 for _, v in _history(uri, dpr["run_id"], "samples_per_s"))
    assert dpr["params.train.max_steps"] == "3" and dpr["params.train.loss"] == "infonce"
    assert dpr["params.method"] == "dpr" and dpr["params.sources"] == str(list(METHODS["dpr"].sources))
    assert {"report.md", "metrics.json", "table1.png"} <= _artifacts(uri, parent["run_id"])
    summary = json.loads((out / "metrics.json").read_text())["methods"]
    assert parent["metrics.dpr.recall_at_100_ct"] == pytest.approx(summary["dpr"]["recall@100_ct"])

    elsewhere = tmp_path / "team-store" / T.STORE_FILE
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
    demo(args + ["--reuse"])
    assert len(_search(monkeypatch, uri)) == 3  # OUT's store untouched
    again = _search(monkeypatch, f"sqlite:///{elsewhere}")
    reused = again[again["tags.reused"] == "true"].set_index("tags.method")
    assert len(again) == 3 and sorted(reused.index) == ["bm25", "dpr"]
    assert reused.loc["dpr", "metrics.ndcg_at_4"] == pytest.approx(children.loc["dpr", "metrics.ndcg_at_4"])
    assert (elsewhere.parent / T.ARTIFACTS_DIR).is_dir()
