"""Every trained encoder is a sentence-transformers model too: SentenceTransformer(folder) gives crops-ray's vectors
(separate towers through a Router, shared ones in the plain layout), and the folder carries a model card."""

import json
import os

import numpy as np
import pytest
import torch

from crops_ray.encoder import Encoder, shallow_copy
from crops_ray.model_card import CARD, export_sentence_transformers, write_model_card

TEXTS = ["jaguar cubs", "Jaguar cubs play by the river at dawn " * 20]  # the second one is cut at max_length


@pytest.fixture(scope="module")
def one_layer(tmp_path_factory):
    return shallow_copy("minilm", str(tmp_path_factory.mktemp("models") / "minilm-1l"), num_layers=1)


@pytest.mark.parametrize("shared", [False, True])
def test_sentence_transformers_loads_the_folder_and_gives_crops_rays_vectors(one_layer, tmp_path, shared):
    from sentence_transformers import SentenceTransformer

    enc = Encoder.from_pretrained(one_layer, shared=shared, max_length=24)
    if not shared:  # towers that differ, as after training: a query through the doc tower would be caught
        with torch.no_grad():
            for p in enc.doc_model.parameters():
                p.add_(0.01 * torch.randn_like(p))
    folder = str(tmp_path / "model")
    enc.save(folder)
    export_sentence_transformers(folder)
    ours = Encoder.from_pretrained(folder)  # crops-ray still reads the folder it wrote
    st = SentenceTransformer(folder, device="cpu", local_files_only=True)
    np.testing.assert_allclose(st.encode_query(TEXTS), ours.encode_queries(TEXTS), atol=1e-5)
    np.testing.assert_allclose(st.encode_document(TEXTS), ours.encode_docs(TEXTS), atol=1e-5)
    if not shared:
        assert np.abs(st.encode_query(TEXTS) - st.encode_document(TEXTS)).max() > 1e-3
        assert json.load(open(f"{folder}/router_config.json"))["structure"]["query"][0] == "query"
    assert st.max_seq_length == 24


@pytest.mark.parametrize("shared", [False, True])
def test_a_sparse_encoder_is_a_sentence_transformers_sparse_encoder(one_layer, tmp_path, shared):
    """CSR heads (crops_ray.sparse) export as sentence-transformers' SparseEncoder: the same codes, k-sparse."""
    from sentence_transformers.sparse_encoder import SparseEncoder

    from crops_ray.sparse.head import SparseConfig, SparseHeads

    enc = Encoder.from_pretrained(one_layer, shared=shared, max_length=24)
    heads = SparseHeads.fresh(enc.pooled_dim, SparseConfig(dim=128, k=8, k_aux=16), shared=shared)
    if not shared:  # heads that differ, as after training
        with torch.no_grad():
            heads.doc.encoder.weight.add_(0.1 * torch.randn_like(heads.doc.encoder.weight))
    enc.attach_sparse(heads)
    folder = str(tmp_path / "model")
    enc.save(folder)
    export_sentence_transformers(folder)
    ours = Encoder.from_pretrained(folder)
    st = SparseEncoder(folder, device="cpu", local_files_only=True)
    queries = st.encode_query(TEXTS, convert_to_tensor=True).to_dense().numpy()
    docs = st.encode_document(TEXTS, convert_to_tensor=True).to_dense().numpy()
    np.testing.assert_allclose(queries, ours.encode_queries(TEXTS), atol=1e-5)
    np.testing.assert_allclose(docs, ours.encode_docs(TEXTS), atol=1e-5)
    assert ((queries != 0).sum(1) <= 8).all()
    if not shared:
        assert json.load(open(f"{folder}/router_config.json"))["structure"]["query"][3] == "sparse_query"


def test_the_card_says_what_the_model_learnt_from_and_how_it_scored(one_layer, tmp_path):
    folder = str(tmp_path / "model")
    Encoder.from_pretrained(one_layer, shared=False).save(folder)
    training = {
        "method": "crops",
        "loss": "h_infonce",
        "steps": 150,
        "global_batch": 32,
        "final_loss": 1.7,
        "queries": 800,
        "samples": {"clicked": {"4": 1000}, "reformulation": {"5": 120}, "exposed": {"3": 2000}},
        "base_model": "minilm",
        "temperature": 0.05,
        "lr": 5e-5,
    }
    write_model_card(folder, training=training)
    card = open(os.path.join(folder, CARD)).read()
    assert card.startswith("---\nlibrary_name: sentence-transformers\n")
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card and "- h-infonce" in card
    assert "| reformulation | 120 |  |  | 120 |" in card and "| exposed |  |  | 2,000 | 2,000 |" in card
    assert "Not evaluated here" in card
    from crops_ray.model_card import level_map_name

    assert level_map_name({"clicked": 4, "exposed": 3, "reformulation": 5}) == "paper"
    assert level_map_name({"clicked": 1, "exposed": 0}) == "binary"
    assert level_map_name({"clicked": 4, "exposed": 2}) == "custom"
    write_model_card(
        folder, evaluation={"recall@100_ct": 0.902, "ndcg@4": 0.956, "queries": 1333, "corpus_videos": 9000}
    )
    card = open(os.path.join(folder, CARD)).read()
    assert "| recall@100_ct | 90.2 |" in card and "corpus of 9,000 videos" in card
    assert "| reformulation | 120 |  |  | 120 |" in card  # training's facts kept when evaluation adds its own
