"""The dual encoder: unit-length float32 embeddings, a saved folder that transformers loads alone, two tower modes."""

import json
import os

import numpy as np
import pytest
import torch

from crops_ray.encoder import CONFIG_NAME, Encoder, shallow_copy

TEXTS = [
    "jaguar",
    "a jaguar stalking prey in the rainforest",
    "the 2024 jaguar f-type coupe",
    "how to brew java coffee",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """The real pretrained MiniLM, cut to 2 of its 6 layers: fast, and still a trained transformer."""
    return shallow_copy("minilm", str(tmp_path_factory.mktemp("models") / "minilm-2l"), num_layers=2)


def test_embeddings_are_unit_float32_and_batch_independent(tiny_model):
    enc = Encoder.from_pretrained(tiny_model, max_length=32)
    q = enc.encode_queries(TEXTS, batch_size=3)
    assert q.dtype == np.float32 and q.shape == (len(TEXTS), enc.dim)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(enc.encode_queries(TEXTS, batch_size=1), q, atol=1e-5)  # padding does not leak in
    np.testing.assert_allclose(enc.encode_queries(TEXTS[::-1], batch_size=4), q[::-1], atol=1e-5)  # order kept
    np.testing.assert_allclose(enc.encode_docs(TEXTS), q, atol=1e-5)  # shared towers: one function
    assert enc.encode_docs([]).shape == (0, enc.dim)
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode_docs(TEXTS, batch_size=0)


def test_saved_folder_loads_with_transformers_alone(tiny_model, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    enc = Encoder.from_pretrained(tiny_model, max_length=32)
    with torch.no_grad():  # change the weights so the round trip is not just the initial model again
        enc.query_model.embeddings.word_embeddings.weight.mul_(1.5)
    enc.save(str(tmp_path / "model"))
    files = set(os.listdir(tmp_path / "model"))
    assert {"config.json", "model.safetensors", "tokenizer.json", CONFIG_NAME} <= files
    meta = json.load(open(tmp_path / "model" / CONFIG_NAME))
    assert meta["pooling"] == "mean" and meta["normalize"] and meta["shared"] and meta["max_length"] == 32

    expected = enc.encode_docs(TEXTS)
    np.testing.assert_allclose(Encoder.from_pretrained(str(tmp_path / "model")).encode_docs(TEXTS), expected, atol=1e-5)

    # What a user without crops_ray does: AutoModel + AutoTokenizer, mean pooling, L2 normalisation.
    model, tok = (
        AutoModel.from_pretrained(str(tmp_path / "model")).eval(),
        AutoTokenizer.from_pretrained(str(tmp_path / "model")),
    )
    inputs = tok(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    plain = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(plain, expected, atol=1e-5)


def test_separate_towers_train_and_save_apart(tiny_model, tmp_path):
    enc = Encoder.from_pretrained(tiny_model, shared=False, max_length=32)
    np.testing.assert_allclose(enc.encode_queries(TEXTS), enc.encode_docs(TEXTS), atol=1e-5)  # same initial weights
    queries_before = enc.encode_queries(TEXTS)
    with torch.no_grad():
        weight = enc.doc_model.encoder.layer[0].intermediate.dense.weight
        weight.add_(0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    np.testing.assert_allclose(enc.encode_queries(TEXTS), queries_before, atol=1e-6)
    docs = enc.encode_docs(TEXTS)
    assert np.abs(docs - queries_before).max() > 1e-3
    enc.save(str(tmp_path / "two"))
    assert {"query", "doc", CONFIG_NAME} <= set(os.listdir(tmp_path / "two"))
    again = Encoder.from_pretrained(str(tmp_path / "two"))
    assert not again.config.shared
    np.testing.assert_allclose(again.encode_docs(TEXTS), docs, atol=1e-5)
    np.testing.assert_allclose(again.encode_queries(TEXTS), queries_before, atol=1e-5)
    with pytest.raises(ValueError, match="shared=False"):
        Encoder.from_pretrained(str(tmp_path / "two"), shared=True)


def test_training_view_has_gradients_and_no_trainable_pooler(tiny_model):
    enc = Encoder.from_pretrained(tiny_model, max_length=32)
    assert all(not p.requires_grad for n, p in enc.named_parameters() if ".pooler." in n)
    q, d = enc(enc.tokenize(TEXTS[:2]), enc.tokenize(TEXTS[2:]))
    (q @ d.T).sum().backward()
    trainable = [p for p in enc.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)  # DDP needs every trainable parameter used


def test_default_model_is_the_pretrained_minilm():
    enc = Encoder.from_pretrained("minilm")
    assert enc.query_model.config.num_hidden_layers == 6 and enc.dim == 384
    q = enc.encode_queries(["big cat hunting in the jungle"])
    d = enc.encode_docs(
        ["A jaguar stalks its prey through the rainforest", "How to brew the perfect cup of java coffee"]
    )
    cat, coffee = (q @ d.T)[0]
    assert cat > coffee + 0.1  # a trained model, not random weights


def test_clear_errors_for_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a local folder"):
        Encoder.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Encoder.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="num_layers"):
        shallow_copy("minilm", str(tmp_path / "x"), num_layers=7)
