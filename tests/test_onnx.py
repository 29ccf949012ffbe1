"""The ONNX Runtime encoder backend (crops_ray/onnx_encoder.py): the same embeddings as the PyTorch encoder (fp32
to 1e-4; int8 to a cosine of 0.98), one export per tower through the cache, clear errors, and the Serve and
evaluation options. No Ray: a 1-layer copy of MiniLM exports in a few seconds."""

import os

import numpy as np
import pytest
import torch

import crops_ray.onnx_encoder as onnx_encoder
from crops_ray.encoder import Encoder, shallow_copy
from crops_ray.onnx_encoder import OnnxEncoder, cached_tower, export_onnx, load_encoder

TEXTS = [
    "jaguar cubs",
    "how to cook pasta at home in ten minutes without a recipe",
    "a",
    "",
    "cats and dogs playing in the snow " * 20,  # longer than max_length: truncated the same way
    "Ünïcödé téxt — and punctuation?!",
]
INT8_MIN_COSINE = 0.98  # dynamic int8 (per channel, MatMul only); the 6-layer model measured >= 0.985


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return shallow_copy("minilm", str(tmp_path_factory.mktemp("models") / "minilm-1l"), num_layers=1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def torch_encoder(tiny_model):
    return load_encoder(tiny_model, "torch")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_fp32_gives_the_torch_embeddings(tiny_model, cache, torch_encoder):
    enc = OnnxEncoder.from_pretrained(tiny_model, threads=1, cache=cache)
    for batch_size in (1, 4, 64):  # padding differs per batch: the mask must be honoured
        got = enc.encode_queries(TEXTS, batch_size=batch_size)
        want = torch_encoder.encode_queries(TEXTS, batch_size=batch_size)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert _cosines(got, want).min() > 1 - 1e-4 and np.abs(got - want).max() < 1e-4
    assert np.abs(enc.encode_docs(TEXTS) - torch_encoder.encode_docs(TEXTS)).max() < 1e-4
    assert enc.encode_queries([]).shape == (0, torch_encoder.dim)


def test_int8_stays_close_to_torch(tiny_model, cache, torch_encoder):
    enc = OnnxEncoder.from_pretrained(tiny_model, quantize=True, threads=1, cache=cache)
    got, want = enc.encode_queries(TEXTS, batch_size=4), torch_encoder.encode_queries(TEXTS)
    assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert _cosines(got, want).min() > INT8_MIN_COSINE
    assert enc.backend == "onnx-int8" and os.path.getsize(cached_tower(tiny_model, True, cache)) < os.path.getsize(
        cached_tower(tiny_model, False, cache)
    )


def test_a_tower_is_exported_once(tiny_model, tmp_path, monkeypatch):
    calls = []
    real = onnx_encoder.export_tower
    monkeypatch.setattr(onnx_encoder, "export_tower", lambda *a, **k: calls.append(a) or real(*a, **k))
    cache = str(tmp_path / "cache")
    first = OnnxEncoder.from_pretrained(tiny_model, cache=cache).encode_queries(TEXTS)
    first_docs = OnnxEncoder.from_pretrained(tiny_model, cache=cache).encode_docs(TEXTS)  # shared towers: one file
    assert len(calls) == 1
    again = OnnxEncoder.from_pretrained(tiny_model, cache=cache)  # a new process would do the same: a cache hit
    assert np.array_equal(again.encode_queries(TEXTS), first) and np.array_equal(again.encode_docs(TEXTS), first_docs)
    OnnxEncoder.from_pretrained(tiny_model, quantize=True, cache=cache).encode_queries(TEXTS)  # from the fp32 entry
    assert len(calls) == 1
    entries = sorted(os.listdir(os.path.join(cache, "onnx")))
    assert [e.rsplit("-", 1)[1] for e in entries if not e.startswith(".")] == ["fp32", "int8"]


def test_separate_towers_each_run_their_own_weights(tiny_model, tmp_path, cache):
    enc = Encoder.from_pretrained(tiny_model, shared=False)
    with torch.no_grad():
        for p in enc.doc_model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    enc.save(str(tmp_path / "sep"))
    enc.eval()
    onnx = OnnxEncoder.from_pretrained(str(tmp_path / "sep"), cache=cache)
    assert np.abs(onnx.encode_queries(TEXTS) - enc.encode_queries(TEXTS)).max() < 1e-4
    assert np.abs(onnx.encode_docs(TEXTS) - enc.encode_docs(TEXTS)).max() < 1e-4
    assert np.abs(onnx.encode_docs(TEXTS) - onnx.encode_queries(TEXTS)).max() > 1e-3  # two towers, two graphs


def test_offline_export_writes_a_file_per_distinct_tower(tiny_model, tmp_path):
    import onnxruntime as ort

    files = export_onnx(tiny_model, str(tmp_path / "out"))
    assert files == {"query": str(tmp_path / "out" / "query.onnx"), "doc": str(tmp_path / "out" / "query.onnx")}
    inputs = {i.name: i.shape for i in ort.InferenceSession(files["query"]).get_inputs()}
    assert inputs["input_ids"] == ["batch", "sequence"] and set(inputs) <= set(onnx_encoder.INPUTS)


def test_bad_input_is_a_clear_error(tiny_model, tmp_path, cache):
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a packaged alias"):
        OnnxEncoder.from_pretrained(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        OnnxEncoder.from_pretrained(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        export_onnx(str(tmp_path / "empty"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="encoder backend must be one of"):
        load_encoder(tiny_model, "tensorrt")
    with pytest.raises(ValueError, match="batch_size"):
        OnnxEncoder.from_pretrained(tiny_model, cache=cache).encode_queries(["x"], batch_size=0)


def test_evaluation_and_serve_take_the_backend_option(tiny_model, cache, monkeypatch):
    from pydantic import ValidationError

    from crops_ray.config import from_dict
    from crops_ray.evaluate import EvalConfig
    from serve.deployments import QueryEncoder
    from serve.settings import ServeSettings, model_version

    assert from_dict(EvalConfig, {"query_backend": "onnx-int8"}).query_backend == "onnx-int8"
    with pytest.raises(ValueError, match="query_backend"):
        from_dict(EvalConfig, {"query_backend": "tensorrt"})
    assert ServeSettings(index="i").encoder_backend == "onnx"  # the default: the same metrics, faster
    with pytest.raises(ValidationError):
        ServeSettings(index="i", encoder_backend="tensorrt")
    # The deployment's class, constructed outside Serve: the backend it loads and the version it reports.
    monkeypatch.setenv("CROPS_CACHE", cache)
    replica = QueryEncoder.func_or_class(tiny_model, threads=1, backend="onnx")
    assert isinstance(replica.encoder, OnnxEncoder)
    info = replica.info()
    assert info["backend"] == "onnx" and info["model"] == model_version(tiny_model) + "+onnx"
    (emb,) = replica._run([TEXTS[:2]])
    assert np.abs(emb - load_encoder(tiny_model).encode_queries(TEXTS[:2])).max() < 1e-4
    assert QueryEncoder.func_or_class(tiny_model, threads=1).info()["model"] == model_version(tiny_model)


def test_build_app_exports_the_query_tower_once_and_binds_the_backend(tiny_model, tmp_path, monkeypatch):
    from crops_ray.discriminator import Calibration
    from crops_ray.index import VectorIndex
    from serve.app import build_app

    monkeypatch.setenv("CROPS_CACHE", str(tmp_path / "cache"))
    from crops_ray.encoder import doc_tower_fingerprint

    index = VectorIndex.build(["a", "b", "c"], np.eye(3, 384, dtype=np.float32))
    index.meta = {"encoder": doc_tower_fingerprint(tiny_model, []), "model": tiny_model}  # as evaluation records it
    index.save(str(tmp_path / "index"))
    Calibration(a=10.0, b=-4.0, model="minilm", kind="bi-encoder", source="test", labelled_pairs=0, positives=0).save(
        str(tmp_path / "cal.json")
    )
    settings = {
        "model": tiny_model,
        "index": str(tmp_path / "index"),
        "calibration": str(tmp_path / "cal.json"),
        "topology": "split",  # the QueryEncoder deployment is read below (auto: fused on one node)
    }
    app = build_app({**settings, "encoder_backend": "onnx-int8"})
    encoder = app._bound_deployment.init_args[0]._bound_deployment
    assert encoder.name == "QueryEncoder" and encoder.init_kwargs["backend"] == "onnx-int8"
    entries = [e for e in os.listdir(tmp_path / "cache" / "onnx") if not e.startswith(".")]
    assert sorted(e.rsplit("-", 1)[1] for e in entries) == ["fp32", "int8"]  # replicas find the export made
    torch_app = build_app({**settings, "encoder_backend": "torch"})
    assert torch_app._bound_deployment.init_args[0]._bound_deployment.init_kwargs["backend"] == "torch"
