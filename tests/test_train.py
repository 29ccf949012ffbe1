"""Training: labels of the global batch, DDP across 2 workers equals one process, resume, recovery, the pipeline."""

import json
import os
import re
import sys

import numpy as np
import pytest
import torch

from crops_ray import storage
from crops_ray.encoder import Encoder, shallow_copy
from crops_ray.hla import build_groups, load_samples, write_groups
from crops_ray.losses import h_infonce
from crops_ray.train import (
    DocCache,
    TrainConfig,
    candidate_labels,
    collate,
    in_batch_labels,
    in_batch_loss,
    lr_lambda,
    plan_steps,
    train,
)
from crops_ray.world.generator import generate_world, world_config
from pipelines.train import main as train_main

TINY = ["--max-length", "32", "--batch-size", "8", "--log-every", "1"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """The real pretrained MiniLM cut to 1 layer (a real transformer, fast on 2 cores)."""
    return shallow_copy("minilm", str(tmp_path_factory.mktemp("models") / "minilm-1l"), num_layers=1)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "tiny"
    generate_world(str(out), world_config("tiny", seed=1), progress=lambda *_: None)
    return str(out)


@pytest.fixture(scope="module")
def tiny_groups(tiny_world, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("groups") / "groups")
    write_groups(build_groups(load_samples(tiny_world)[0]), folder)
    return folder


def _rows(groups):
    return {k: [g[k] for g in groups] for k in ("query", "texts", "video_ids", "levels", "sources")}


def _group(query, cands):
    """cands: (video_id, level, source)."""
    return {
        "query": query,
        "texts": [f"{query} video {v}" for v, _, _ in cands],
        "video_ids": [v for v, _, _ in cands],
        "levels": [lv for _, lv, _ in cands],
        "sources": [s for _, _, s in cands],
    }


# ------------------------------------------------------------------------------------------- labels


def test_dpr_baseline_sees_search_log_candidates_with_clicks_positive():
    levels, sources = [5, 4, 4, 3, 1], ["reformulation", "clicked", "recommendation", "exposed", "filtered"]
    assert candidate_labels(levels, sources, "h_infonce") == ([0, 1, 2, 3, 4], levels)
    assert candidate_labels(levels, sources, "infonce") == ([1, 3, 4], [1, 0, 0])
    with pytest.raises(ValueError, match="unknown loss"):
        candidate_labels(levels, sources, "triplet")


def test_in_batch_labels_own_group_same_query_shared_video_and_negatives():
    # rows: q1, q2; columns: q1's group (a:4, b:2), q2's group (c:3, a:1), another q1 group (d:3)
    t = lambda xs: torch.tensor(xs)  # noqa: E731
    labels = in_batch_labels(
        row_query_key=t([1, 2]),
        own_video_key=t([10, 11, 12, 10]),
        own_label=t([4, 2, 3, 1]),
        own_row=t([0, 0, 1, 1]),
        col_query_key=t([1, 1, 2, 2, 1]),
        col_video_key=t([10, 11, 12, 10, 13]),
        col_label=t([4, 2, 3, 1, 3]),
    )
    assert labels.tolist() == [
        [4, 2, 0, 4, 3],  # video a in q2's group is q1's level-4 video; q1's other group (d) keeps its level
        [1, 0, 3, 1, 0],  # q2 knows video a at level 1 (its own group); b and d are in-batch negatives
    ]


def test_candidates_encoded_in_length_chunks_come_back_in_order(tiny_model):
    """collate tokenises the candidates in chunks of similar length (less padding): the same embeddings, in order."""
    enc = Encoder.from_pretrained(tiny_model, max_length=32).eval()
    texts = [("jaguar " * n).strip() for n in (9, 1, 5, 12, 2, 7, 3)]
    chunks, inverse = enc.tokenize_chunks(texts, chunk_size=3)
    assert len(chunks) == 3 and [c["input_ids"].shape[0] for c in chunks] == [3, 3, 1]
    assert chunks[0]["input_ids"].shape[1] < enc.tokenize(texts)["input_ids"].shape[1]  # the short ones pad less
    with torch.no_grad():
        _, chunked = enc(enc.tokenize(texts[:1]), (chunks, inverse))
        _, whole = enc(enc.tokenize(texts[:1]), enc.tokenize(texts))
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


def test_single_process_loss_is_h_infonce_on_the_batch_matrix(tiny_model):
    enc = Encoder.from_pretrained(tiny_model, max_length=32).eval()
    groups = [
        _group("jaguar", [("a", 4, "clicked"), ("b", 2, "ranked")]),
        _group("java", [("c", 3, "exposed")]),
        _group("jaguar", [("d", 5, "reformulation"), ("a", 4, "clicked")]),
    ]
    batch = collate(_rows(groups), enc, "h_infonce")
    q, d = enc(batch.query_inputs, batch.doc_inputs)
    out = in_batch_loss(q, d, batch, "h_infonce", 0.05, num_levels=6)
    labels = torch.tensor([[4, 2, 0, 5, 4], [0, 0, 3, 0, 0], [4, 2, 0, 5, 4]])
    expected = h_infonce(q @ d.T, labels, 0.05).detach()
    assert out.value == pytest.approx(float(expected), rel=1e-5)
    assert float(out.backward.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert out.level_counts.tolist() == [0, 0, 2, 1, 4, 2]
    dpr = collate(_rows(groups), enc, "infonce")
    assert dpr.cand_label.tolist() == [1, 0, 0, 1]  # the reformulation candidate is not DPR data


def test_frozen_doc_tower_trains_the_query_tower_only_and_encodes_each_text_once(tiny_model, tmp_path):
    enc = Encoder.from_pretrained(tiny_model, shared=False, max_length=32)
    enc.freeze_docs()
    enc.train()
    groups = [_group("jaguar", [("a", 4, "clicked"), ("b", 2, "ranked")]), _group("jaguar", [("a", 4, "clicked")])]
    batch = collate(_rows(groups), enc, "h_infonce", tokenize_docs=False)
    assert batch.doc_inputs is None and batch.doc_texts == ["jaguar video a", "jaguar video b", "jaguar video a"]
    cache = DocCache(enc)
    q, none = enc(batch.query_inputs, None)
    d = cache(batch.doc_texts, "cpu")
    assert none is None and cache.encoded == 2  # "jaguar video a" twice in the batch, encoded once
    np.testing.assert_allclose(d.numpy(), enc.encode_docs(batch.doc_texts), atol=1e-5)  # eval mode, no dropout
    in_batch_loss(q, d, batch, "h_infonce", 0.05, num_levels=6).backward.backward()
    assert all(p.grad is None for p in enc.doc_model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.query_model.parameters())
    cache(["jaguar video b"], "cpu")
    assert cache.encoded == 2  # a cache hit

    # A prefill from the corpus encoding (what the evaluation computes anyway) is used, once checked.
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = ["jaguar cubs in the wild", "the new jaguar coupe", "java coffee beans"]

    def write(emb, path):
        pq.write_table(
            pa.table(
                {"text": texts, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])}
            ),
            path,
        )
        return path

    good = write(enc.encode_docs(texts), str(tmp_path / "good.parquet"))
    warm = DocCache(enc)
    assert warm.prefill(good, "cpu") == 3
    warm(texts, "cpu")
    assert warm.encoded == 0  # the batch is served from the prefill
    other = Encoder.from_pretrained(tiny_model, shared=False, max_length=3)  # truncates: other embeddings
    with pytest.raises(ValueError, match="not made by this document tower"):
        DocCache(enc).prefill(write(other.encode_docs(texts), str(tmp_path / "bad.parquet")), "cpu")
    with pytest.raises(ValueError, match="shared_towers=False"):
        TrainConfig(doc_tower="frozen")
    with pytest.raises(ValueError, match="separate towers"):
        Encoder.from_pretrained(tiny_model).freeze_docs()


def test_schedule_warms_up_then_decays_to_zero():
    f = lr_lambda(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) == 0.0


def test_step_plan_and_config_errors():
    assert plan_steps(100, TrainConfig(batch_size=8, num_workers=2)) == (6, 6)
    assert plan_steps(100, TrainConfig(batch_size=8, num_workers=2, epochs=2.5, grad_accum=2)) == (8, 6)
    assert plan_steps(100, TrainConfig(batch_size=8, max_steps=3)) == (3, 12)
    with pytest.raises(ValueError, match="too few for batch_size=32 x num_workers=4"):
        plan_steps(100, TrainConfig(batch_size=32, num_workers=4))
    with pytest.raises(ValueError, match="unknown loss 'dpr'"):
        TrainConfig(loss="dpr")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_pipeline_errors_are_clear(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(SystemExit) as exc:
        train_main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        train_main(["--data", str(data), "--out", str(tmp_path / "out"), "--loss", "dpr"])
    assert exc.value.code == 2 and "invalid choice: 'dpr'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        train_main(["--data", str(data), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and "no parquet data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        train_main(["--data", str(data), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "no-model")])
    assert exc.value.code == 2 and "neither a local folder nor a packaged alias" in capsys.readouterr().err
    (tmp_path / "cfg.yaml").write_text("train: {batch_sise: 8}\n")
    with pytest.raises(SystemExit) as exc:
        train_main(["--data", str(data), "--out", str(tmp_path / "out"), "--config", str(tmp_path / "cfg.yaml")])
    assert exc.value.code == 2 and "unknown setting(s) ['batch_sise']" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- Ray


def _ddp_step(config):
    """Per loss, one forward/backward of the real loss on this rank's groups; rank 0 reports losses and gradients."""
    import tempfile

    import ray.train
    import ray.train.torch

    from crops_ray.encoder import Encoder
    from crops_ray.train import collate, in_batch_loss

    rank = ray.train.get_context().get_world_rank()
    enc = Encoder.from_pretrained(config["model"], max_length=32)
    model = ray.train.torch.prepare_model(enc)
    model.eval()  # no dropout: comparable with one process
    metrics = {}
    for loss in ("h_infonce", "infonce"):
        model.zero_grad()
        batch = collate(config["rows"][rank], enc, loss)
        q, d = model(batch.query_inputs, batch.doc_inputs)
        out = in_batch_loss(q, d, batch, loss, 0.05, num_levels=6)
        out.backward.backward()
        grad = enc.query_model.encoder.layer[0].output.dense.weight.grad  # after DDP's average over the 2 ranks
        metrics[loss] = {"loss": out.value, "grad": grad[:4, :8].flatten().tolist(), "grad_norm": float(grad.norm())}
    with tempfile.TemporaryDirectory() as folder:
        ckpt = ray.train.Checkpoint.from_directory(folder) if rank == 0 else None
        ray.train.report(metrics, checkpoint=ckpt)


@pytest.mark.ray
def test_two_workers_equal_one_process_on_the_concatenated_batch(tiny_model, tiny_groups, tmp_path, ray_local):
    """The gather keeps gradients and rank order: loss and gradient of 2 DDP workers = one process on both batches."""
    from ray import cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    groups = storage.read_table(tiny_groups).slice(0, 6).to_pylist()
    groups[1] = {k: v if k == "query" else v[:3] for k, v in groups[1].items()}  # uneven candidate counts per rank
    groups[3] = {k: v if k == "query" else v[::-1][:5] for k, v in groups[0].items()}  # rank 0's first query again
    per_rank = [groups[:3], groups[3:]]
    trainer = TorchTrainer(
        _ddp_step,
        train_loop_config={"model": tiny_model, "rows": [_rows(g) for g in per_rank]},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name="ddp", storage_path=str(tmp_path)),
    )
    ddp = trainer.fit().metrics

    enc = Encoder.from_pretrained(tiny_model, max_length=32).eval()
    for loss in ("h_infonce", "infonce"):
        enc.zero_grad()
        batch = collate(_rows(groups), enc, loss)
        q, d = enc(batch.query_inputs, batch.doc_inputs)
        out = in_batch_loss(q, d, batch, loss, 0.05, num_levels=6)
        out.backward.backward()
        grad = enc.query_model.encoder.layer[0].output.dense.weight.grad
        assert ddp[loss]["loss"] == pytest.approx(out.value, rel=1e-5), loss
        assert ddp[loss]["grad_norm"] == pytest.approx(float(grad.norm()), rel=1e-4), loss
        np.testing.assert_allclose(
            ddp[loss]["grad"], grad[:4, :8].flatten().numpy(), rtol=1e-3, atol=1e-7, err_msg=loss
        )
    assert ddp["h_infonce"]["loss"] != pytest.approx(ddp["infonce"]["loss"])


@pytest.mark.ray
@pytest.mark.slow
def test_pipeline_trains_two_workers_and_resumes(tiny_world, tiny_model, tmp_path, ray_local, capsys):
    out = str(tmp_path / "crops")
    (tmp_path / "job.yaml").write_text("train: {warmup_ratio: 0.5, batch_size: 4}\ngroups: {group_size: 6}\n")
    args = [
        "--data",
        tiny_world,
        "--out",
        out,
        "--loss",
        "h_infonce",
        "--num-workers",
        "2",
        "--model",
        tiny_model,
        *TINY,
        "--config",
        str(tmp_path / "job.yaml"),
    ]
    first = train_main(args + ["--max-steps", "2"])
    printed = capsys.readouterr().out
    assert max(len(t) for t in storage.read_table(os.path.join(out, "groups"))["texts"].to_pylist()) == 6  # YAML
    assert first["config"]["warmup_ratio"] == 0.5 and first["global_batch"] == 16  # YAML, and the flag wins
    assert (
        "step 1/2" in printed
        and "step 2/2" in printed
        and "samples/s" in printed
        and re.search(r"\| final loss +\|", printed)
    )
    assert first["steps"] == 2 and first["resumed_from_step"] == 0 and first["num_workers"] == 2
    assert {"1", "2", "3", "4"} <= set(first["loss_per_level"]) and first["samples_per_s"] > 0
    saved = json.load(open(os.path.join(out, "train_metrics.json")))
    assert saved["final_loss"] == pytest.approx(first["final_loss"])
    enc = Encoder.from_pretrained(os.path.join(out, "model"))
    initial = Encoder.from_pretrained(tiny_model, max_length=32)
    assert np.abs(enc.encode_docs(["jaguar cubs"]) - initial.encode_docs(["jaguar cubs"])).max() > 1e-4  # it trained
    # The trained model is a sentence-transformers model with the same vectors, and its card names its samples.
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(os.path.join(out, "model"), device="cpu", local_files_only=True)
    texts = ["jaguar cubs", "how to tune a guitar " * 10]
    np.testing.assert_allclose(st.encode_query(texts), enc.encode_queries(texts), atol=1e-5)
    np.testing.assert_allclose(st.encode_document(texts), enc.encode_docs(texts), atol=1e-5)
    card = open(os.path.join(out, "model", "README.md")).read()
    assert "library_name: sentence-transformers" in card and "h_infonce" in card and "| clicked |" in card

    again = train_main(args + ["--max-steps", "3"])  # same storage and name: resume
    assert again["resumed_from_step"] == 2 and again["steps"] == 3
    assert "step 3/3" in capsys.readouterr().out

    with pytest.raises(SystemExit):  # the DPR baseline cannot silently continue the CroPS run
        train_main([*args[:4], "--loss", "infonce", *args[6:], "--max-steps", "4"])
    assert "other settings" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.timeout(600)  # a rank that went on alone would wait in DDP's next all-reduce until this timeout
def test_a_diverging_run_stops_with_exit_2_and_saves_no_model(tiny_world, tiny_model, tmp_path, ray_local, capsys):
    """Two DDP ranks: both see the same non-finite gradient norm after the all-reduce and stop at the same step
    (a rank that stopped alone would leave the other blocked in the next all-reduce: this test would hang)."""
    out = tmp_path / "crops"
    with pytest.raises(SystemExit) as exit_:
        train_main(
            [
                "--data",
                tiny_world,
                "--out",
                str(out),
                "--model",
                tiny_model,
                *TINY,
                "--lr",
                "1e30",
                "--max-steps",
                "6",
                "--num-workers",
                "2",
                "--doc-tower",
                "frozen",
            ]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "training stopped at step" in err and "no model was saved" in err, err
    assert int(err.split("training stopped at step")[1].split()[0].strip(":,")) <= 6
    assert not (out / "model").exists() and not (out / "train_metrics.json").exists()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker's process through /proc")
def test_killed_worker_restarts_from_the_checkpoint(tiny_groups, tiny_model, tmp_path, ray_local):
    """SIGKILL one of the two Ray Train workers from outside once the step-4 checkpoint is behind it, like a lost
    machine: Ray Train restarts the group from the latest checkpoint, not from scratch, and finishes."""
    import re
    import signal
    import threading
    import time

    from conftest import descendant_pids_titled

    cfg = TrainConfig(
        model=tiny_model,
        max_length=32,
        batch_size=4,
        grad_accum=2,
        num_workers=2,
        max_steps=12,
        checkpoint_every=4,
        log_every=1,
        max_failures=1,
    )
    steps, killed = [], []

    def progress(line):
        m = re.match(r"step (\d+)/", str(line))
        if m:
            steps.append(int(m.group(1)))

    def killer():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            if steps and steps[-1] >= 6:  # the step-4 checkpoint has been reported
                workers = [pid for pid, _ in descendant_pids_titled("RayTrainWorker")]
                if workers:
                    os.kill(workers[-1], signal.SIGKILL)
                    killed.append((workers[-1], steps[-1]))
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    metrics = train(tiny_groups, str(tmp_path / "out"), cfg, progress=progress)
    thread.join(timeout=5)
    assert killed, "no Ray Train worker process was found to kill"
    killed_at = killed[0][1]
    assert metrics["steps"] == 12 and metrics["global_batch"] == 16  # 4 groups x 2 micro-batches x 2 workers
    resumed = metrics["resumed_from_step"]  # the latest checkpoint before the kill, not step 0
    assert resumed > 0 and resumed % 4 == 0 and resumed <= killed_at + 4, (resumed, killed_at)
    Encoder.from_pretrained(os.path.join(tmp_path, "out", "model")).encode_queries(["jaguar"])


@pytest.mark.ray
@pytest.mark.slow
def test_seeded_single_worker_runs_repeat_exactly(tiny_groups, tiny_model, tmp_path, ray_local):
    """Two seeded runs give the same weights; with a frozen document tower (the demo's setting) only the query
    tower moves, and the corpus embedding cache of the trained model is the pretrained model's entry."""
    from safetensors.numpy import load_file

    from crops_ray.encoder import doc_tower_fingerprint

    cfg = TrainConfig(
        loss="infonce",
        model=tiny_model,
        max_length=64,
        batch_size=8,
        max_steps=2,
        seed=4,
        shared_towers=False,
        doc_tower="frozen",
    )
    runs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        runs.append(train(tiny_groups, out, cfg, progress=lambda *_: None))
        runs[-1]["weights"] = load_file(os.path.join(out, "model", "query", "model.safetensors"))
    assert runs[0]["final_loss"] == runs[1]["final_loss"] and set(runs[0]["loss_per_level"]) == {"1"}
    for key, value in runs[0]["weights"].items():
        np.testing.assert_array_equal(value, runs[1]["weights"][key])
    trained = Encoder.from_pretrained(os.path.join(tmp_path, "a", "model"))
    initial = Encoder.from_pretrained(tiny_model)
    text = ["jaguar cubs in the wild"]
    np.testing.assert_allclose(trained.encode_docs(text), initial.encode_docs(text), atol=1e-6)
    assert np.abs(trained.encode_queries(text) - initial.encode_queries(text)).max() > 1e-4
    assert doc_tower_fingerprint(str(tmp_path / "a" / "model"), []) == doc_tower_fingerprint(
        tiny_model, []
    )  # zero-shot's entry
