"""Serving a sparse model (CSR heads) with its sparse index: the same API as a dense model's, answers equal to the
library's, and the wrong kind of index refused at start-up.

One fused application (the default ONNX query backend: the exported tower's pooled embedding, the query head on
top) over a one-layer MiniLM with shared towers and CSR heads, its inverted index of a few dozen texts and, on the
search page, the same model on PyTorch as the comparison column. Started once for every assertion.
"""

import re
from types import SimpleNamespace

import numpy as np
import pytest
import requests
from conftest import free_port

from serve.app import APP_NAME, build_app

TIMEOUT = 120  # seconds per HTTP request (the machine is shared)
LATENTS, K = 256, 8
TEXTS = [
    f"{a} {b}"
    for a in ("jaguar", "piano", "pasta", "guitar", "cat", "rocket")
    for b in ("cubs", "lesson", "recipe", "video", "tips", "live")
]
QUERIES = ["jaguar cubs in the wild", "an easy pasta recipe", "how to play the piano", "rocket launch live"]


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    """The sparse model, its index as evaluation writes it, the base model's dense index (the wrong kind), and the
    settings of an application serving them."""
    from crops_ray.discriminator import Calibration
    from crops_ray.encoder import Encoder, doc_head_fingerprint, doc_tower_fingerprint, shallow_copy
    from crops_ray.index import VectorIndex
    from crops_ray.sparse.fit import sparse_init
    from crops_ray.sparse.head import SparseConfig
    from crops_ray.sparse.index import SparseIndex

    root = tmp_path_factory.mktemp("serve-sparse")
    base = shallow_copy("minilm", str(root / "base"), 1)
    pooled = Encoder.from_pretrained(base).encode_docs(TEXTS, pooled=True)
    cfg = SparseConfig(dim=LATENTS, k=K, k_aux=16, fit_steps=20, fit_batch_size=32)
    # Shared towers: the ONNX backend's pooled width must be the transformer's, not the latents the folder's
    # crops_encoder.json leads Encoder.output_dim to.
    model = sparse_init(base, pooled, str(root / "model"), cfg, shared=True, seed=0, progress=lambda *_: None)
    encoder = Encoder.from_pretrained(model)
    ids = [f"v{i:03d}" for i in range(len(TEXTS))]
    index = SparseIndex.build(ids, encoder.sparse.codes("doc", pooled))
    index.meta = {  # as evaluation writes it
        "encoder": doc_tower_fingerprint(model, []),
        "doc_head": doc_head_fingerprint(model),
        "model": model,
        "audit": index.audit(),
    }
    index.save(str(root / "index"))
    # Another fit of heads over the same tower (another seed): same fingerprint and width, other codes.
    other = sparse_init(base, pooled, str(root / "other"), cfg, shared=True, seed=1, progress=lambda *_: None)
    other_index = SparseIndex.build(ids, Encoder.from_pretrained(other).sparse.codes("doc", pooled))
    other_index.meta = {**index.meta, "doc_head": doc_head_fingerprint(other), "model": other}
    other_index.save(str(root / "other-index"))
    dense = VectorIndex.build(ids, pooled)  # the base model's: the same document tower, so the same fingerprint
    dense.meta = {"encoder": doc_tower_fingerprint(base, []), "model": base}
    dense.save(str(root / "dense-index"))
    Calibration(a=10.0, b=-4.0, model=base, kind="bi-encoder", source="test", labelled_pairs=0, positives=0).save(
        str(root / "cal.json")
    )
    settings = {
        "model": model,
        "index": str(root / "index"),
        "discriminator_model": base,
        "calibration": str(root / "cal.json"),
        "topology": "fused",
        "compare_model": model,  # the page's second column: the same model on PyTorch
        "compare_index": str(root / "index"),
    }
    return SimpleNamespace(
        base=base,
        model=model,
        encoder=encoder,
        index=index,
        dense_dir=str(root / "dense-index"),
        other_dir=str(root / "other-index"),
        settings=settings,
    )


def test_an_index_of_the_other_kind_is_refused_at_start_up(sparse):
    from crops_ray.index import check_index_matches

    with pytest.raises(ValueError, match="is a dense index, but the encoder .* is sparse"):
        build_app({**sparse.settings, "index": sparse.dense_dir})
    with pytest.raises(ValueError, match="is a sparse index, but the encoder .* is dense"):
        build_app({**sparse.settings, "model": sparse.base, "compare_model": None, "compare_index": None})
    with pytest.raises(ValueError, match="is a dense index, but the encoder .* is sparse"):  # the page's column too
        build_app({**sparse.settings, "compare_index": sparse.dense_dir})
    with pytest.raises(ValueError, match="codes of another document head"):  # same tower and width, other heads
        check_index_matches(sparse.other_dir, sparse.model)
    assert "document head" in check_index_matches(sparse.settings["index"], sparse.model)


@pytest.fixture(scope="module")
def url(sparse, ray_local):
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(sparse.settings), name=APP_NAME, route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def post(url: str, path: str, body) -> requests.Response:
    r = requests.post(url + path, json=body, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r


@pytest.mark.ray
@pytest.mark.slow
def test_a_sparse_model_is_served_with_the_same_api(url, sparse):
    health = requests.get(f"{url}/healthz", timeout=TIMEOUT).json()
    assert health["status"] == "ok" and health["kind"] == "sparse" and health["encoder_backend"] == "onnx"
    assert health["dim"] == LATENTS and health["index_size"] == len(TEXTS)
    assert health["index_check"].startswith("encoder fingerprint")

    # /v1/encode: each code as its non-zeros, the library's (PyTorch) codes up to ONNX's rounding.
    want = sparse.encoder.encode_queries(QUERIES)
    body = post(url, "/v1/encode", {"queries": QUERIES}).json()
    assert body["dim"] == LATENTS and len(body["embeddings"]) == len(QUERIES)
    for vector, row in zip(body["embeddings"], want):
        assert set(vector) == {"indices", "values", "dim"} and vector["dim"] == LATENTS
        assert 0 < len(vector["indices"]) <= K and vector["indices"] == np.flatnonzero(row).tolist()
        np.testing.assert_allclose(vector["values"], row[vector["indices"]], atol=1e-5, rtol=0)

    # /v1/search: the library's exact search of the library's codes.
    for query, codes in zip(QUERIES, want):
        results = post(url, "/v1/search", {"query": query, "k": 5}).json()["results"]
        ids, scores = sparse.index.search(codes[None], 5)
        assert [h["video_id"] for h in results] == ids[0]
        np.testing.assert_allclose([h["score"] for h in results], scores[0], atol=1e-5, rtol=0)

    # The search page: the served model (ONNX) and its PyTorch twin list the library's top 5.
    page = requests.get(url, params={"q": QUERIES[0], "k": 5}, timeout=TIMEOUT)
    assert page.status_code == 200
    columns = re.findall(r'<section class="column".*?</section>', page.text, flags=re.S)
    ids, _ = sparse.index.search(want[:1], 5)
    assert len(columns) == 2
    assert all(re.findall(r'data-video-id="([^"]+)"', column) == ids[0] for column in columns)
