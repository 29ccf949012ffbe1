"""The Serve application on loopback: every endpoint with good and bad input, answers equal to the library's.

One application (2-layer MiniLM, an index of 400 tiny-world videos, a calibration fitted on the world's labelled
pairs) is started once for the module on top of the session's Ray; a second gateway with a bearer token shares
its model deployments. Tests that need no Serve (config, settings, the pipeline's argument checks) run fast.
"""

import asyncio
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
import yaml
from conftest import descendant_pids_titled, free_port

from crops_ray.schema import table_files
from serve.app import APP_NAME, DEFAULT_OPTIONS, ServeSettings, build_app, model_version, resolve_settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INDEXED_VIDEOS = 400
TOKEN_ENV, TOKEN = "CROPS_TEST_SERVE_TOKEN", "test-token-5f2c"
TIMEOUT = 120  # seconds per HTTP request (the machine is shared)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A shallow encoder, an index of its document embeddings, and a discriminator calibration, all real."""
    from crops_ray.discriminator import Discriminator, DiscriminatorConfig, fit_calibration
    from crops_ray.encoder import Encoder, shallow_copy
    from crops_ray.index import VectorIndex
    from crops_ray.world.generator import generate_world, world_config
    from crops_ray.world.labelled_pairs import world_labelled_pairs

    root = tmp_path_factory.mktemp("serve")
    world = str(root / "world")
    generate_world(world, world_config("tiny", seed=1), progress=lambda *_: None)
    model = shallow_copy("minilm", str(root / "minilm-2l"), 2)
    encoder = Encoder.from_pretrained(model)
    videos = pq.read_table(table_files(world, "videos")).slice(0, INDEXED_VIDEOS).to_pandas()
    from crops_ray.encoder import doc_tower_fingerprint

    index = VectorIndex.build(videos["video_id"].tolist(), encoder.encode_docs(videos["text"].tolist()))
    index.meta = {"encoder": doc_tower_fingerprint(model, []), "model": model}  # as evaluation records it
    index.save(str(root / "index"))
    cfg = DiscriminatorConfig(model=model, kind="bi-encoder")
    fit = world_labelled_pairs(world, 200, heldout=False, seed=1)
    held = world_labelled_pairs(world, 200, heldout=True, seed=1)
    calibration = fit_calibration(Discriminator(cfg), fit, held, "test", alpha=0.6)
    calibration.save(str(root / "calibration.json"))
    queries = pq.read_table(f"{world}/eval/queries.parquet")["query"].to_pylist()
    return SimpleNamespace(
        model=model,
        index_dir=str(root / "index"),
        calibration=str(root / "calibration.json"),
        encoder=encoder,
        index=index,
        discriminator=Discriminator(cfg, calibration),
        videos=videos,
        queries=queries,
        # A 50 ms batch window (default 5 ms) so that the concurrency test sees batches form even on a fast machine.
        settings={
            "model": model,
            "index": str(root / "index"),
            "discriminator_model": model,
            "calibration": str(root / "calibration.json"),
            "batch_wait_timeout_s": 0.05,
            "encoder_backend": "torch",  # answers compared with the library's PyTorch encoder, exactly
            "topology": "split",  # these tests reach the model deployments' handles (auto: fused on one node)
        },
    )


@pytest.fixture(scope="module")
def url(assets, ray_local):
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(assets.settings), name=APP_NAME, route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture(scope="module")
def secure_url(url, assets):
    """A second gateway, token required, over the first application's model deployments."""
    from ray import serve

    from serve.app import Gateway

    handles = [
        serve.get_deployment_handle(name, app_name=APP_NAME) for name in ("QueryEncoder", "Discriminator", "Retriever")
    ]
    settings = asdict(resolve_settings({**assets.settings, "auth_token_env": TOKEN_ENV}))
    gateway = Gateway.options(ray_actor_options={"num_cpus": 0.05, "runtime_env": {"env_vars": {TOKEN_ENV: TOKEN}}})
    serve.run(gateway.bind(*handles, settings), name="secure", route_prefix="/secure")
    yield f"{url}/secure"
    serve.delete("secure")


def post(url: str, path: str, body, **kw) -> requests.Response:
    r = requests.post(url + path, json=body, timeout=TIMEOUT, **kw)
    assert r.status_code < 500, r.text
    return r


# ------------------------------------------------------------------------------------------- good requests


@pytest.mark.ray
@pytest.mark.slow
def test_healthz_reports_what_is_served(url, assets):
    r = requests.get(f"{url}/healthz", timeout=TIMEOUT)
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok" and h["auth"] is False
    assert h["model"] == model_version(assets.model) and h["model"].startswith("minilm-2l@")
    assert h["dim"] == assets.encoder.dim and h["index_size"] == INDEXED_VIDEOS
    assert h["index_check"].startswith("encoder fingerprint")  # build_app matched the index to this encoder
    assert h["calibration"]["source"] == "test" and h["discriminator"].startswith(model_version(assets.model) + "+cal")
    assert h["gate"] == {"kind": "bi-encoder", "weights": assets.model}  # the gate served, named


@pytest.mark.ray
@pytest.mark.slow
def test_encode_returns_exactly_the_library_embeddings(url, assets):
    texts = [
        "jaguar cubs",
        "python tutorial for beginners",
        "Ünïcödé 日本語 🐆",
        "long " * 300,
    ]  # the last is truncated
    r = post(url, "/v1/encode", {"queries": texts})
    assert r.status_code == 200
    body = r.json()
    got = np.asarray(body["embeddings"], dtype=np.float32)
    want = assets.encoder.encode_queries(texts)
    assert got.shape == (len(texts), assets.encoder.dim) and body["dim"] == assets.encoder.dim
    np.testing.assert_array_equal(got, want)  # float32 values survive JSON exactly
    assert body["model"] == model_version(assets.model)


@pytest.mark.ray
@pytest.mark.slow
def test_concurrent_requests_are_batched_and_not_mixed_up(url, assets):
    from ray import serve

    encoder = serve.get_deployment_handle("QueryEncoder", app_name=APP_NAME)
    before = encoder.info.remote().result()
    requests_ = [assets.queries[i : i + 1 + i % 3] for i in range(32)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda qs: post(url, "/v1/encode", {"queries": qs}), requests_))
    for qs, r in zip(requests_, answers):
        assert r.status_code == 200
        # Encoded in a batch with other requests: equal to encoding alone up to float rounding (padding differs).
        np.testing.assert_allclose(
            np.asarray(r.json()["embeddings"], np.float32), assets.encoder.encode_queries(qs), atol=1e-6, rtol=0
        )
    after = encoder.info.remote().result()
    assert after["requests"] - before["requests"] == len(requests_)
    assert after["batches"] - before["batches"] < len(requests_) and after["largest_batch"] > 1


@pytest.mark.ray
@pytest.mark.slow
def test_score_returns_the_calibrated_theta(url, assets):
    video = assets.videos["text"].tolist()
    pairs = [
        ("jaguar", video[0]),
        ("python tutorial", video[1]),
        ("python tutorial", video[1]),
        ("mercury planet", video[2]),
    ]
    r = post(url, "/v1/score", {"pairs": [{"query": q, "text": t} for q, t in pairs]})
    assert r.status_code == 200
    body = r.json()
    want = assets.discriminator.theta([q for q, _ in pairs], [t for _, t in pairs])
    np.testing.assert_allclose(body["scores"], want, atol=1e-6, rtol=0)
    assert all(0.0 <= s <= 1.0 for s in body["scores"]) and body["scores"][1] == body["scores"][2]
    assert body["discriminator"].startswith(model_version(assets.model)) and body["model"] == model_version(
        assets.model
    )


@pytest.mark.ray
@pytest.mark.slow
def test_search_returns_the_library_top_k(url, assets):
    text, video_id = assets.videos["text"][7], assets.videos["video_id"][7]
    r = post(url, "/v1/search", {"query": text, "k": 5})
    assert r.status_code == 200
    results = r.json()["results"]
    ids, scores = assets.index.search(assets.encoder.encode_queries([text]), 5)
    assert [h["video_id"] for h in results] == ids[0]
    np.testing.assert_allclose([h["score"] for h in results], scores[0], atol=1e-5)
    assert results[0]["video_id"] == video_id and results[0]["score"] > 0.999  # shared towers: a title finds itself
    assert r.json()["index"].startswith("index@") and r.json()["model"] == model_version(assets.model)

    default = post(url, "/v1/search", {"query": "jaguar"}).json()["results"]
    assert len(default) == 100  # default k
    everything = post(url, "/v1/search", {"query": "jaguar", "k": 1000}).json()["results"]
    assert len(everything) == INDEXED_VIDEOS  # k beyond the index: the whole index, best first
    assert [h["score"] for h in everything] == sorted((h["score"] for h in everything), reverse=True)


@pytest.mark.ray
@pytest.mark.slow
def test_the_fused_topology_answers_like_the_split_one(url, assets, monkeypatch):
    """topology: fused puts the three models in the ingress replica (here with the default ONNX query encoder):
    the same answers, versions and batching."""
    from ray import serve

    from serve import app

    # The split application already holds 1.4 of the session's 2 CPUs: the fused replica asks for what is left.
    monkeypatch.setitem(app.DEFAULT_OPTIONS, "FusedGateway", {**app.DEFAULT_OPTIONS["FusedGateway"], "num_cpus": 0.5})
    settings = {**assets.settings, "topology": "fused", "encoder_backend": "onnx"}
    serve.run(build_app(settings), name="fused", route_prefix="/fused")
    try:
        fused = f"{url}/fused"
        health = requests.get(f"{fused}/healthz", timeout=TIMEOUT).json()
        split = requests.get(f"{url}/healthz", timeout=TIMEOUT).json()
        assert health["model"] == split["model"] + "+onnx" and health["encoder_backend"] == "onnx"
        assert all(health[k] == split[k] for k in ("discriminator", "index", "dim", "index_size"))
        texts = ["jaguar cubs", assets.videos["text"][3]]
        np.testing.assert_allclose(
            post(fused, "/v1/encode", {"queries": texts}).json()["embeddings"],
            assets.encoder.encode_queries(texts),
            atol=1e-5,
        )
        text = assets.videos["text"][7]
        got, want = (post(u, "/v1/search", {"query": text, "k": 5}).json() for u in (fused, url))
        assert [h["video_id"] for h in got["results"]] == [h["video_id"] for h in want["results"]]
        pairs = [
            {"query": "jaguar", "text": assets.videos["text"][0]},
            {"query": "python", "text": assets.videos["text"][1]},
        ]
        np.testing.assert_allclose(
            post(fused, "/v1/score", {"pairs": pairs}).json()["scores"],
            post(url, "/v1/score", {"pairs": pairs}).json()["scores"],
            atol=1e-6,
        )
        with ThreadPoolExecutor(8) as pool:  # concurrent requests share the fused replica's encoder batches
            answers = list(pool.map(lambda q: post(fused, "/v1/encode", {"queries": [q]}), assets.queries[:16]))
        assert all(a.status_code == 200 for a in answers)
        info = serve.get_deployment_handle("FusedGateway", app_name="fused").encoder_info.remote().result()
        assert info["requests"] >= 16 and info["largest_batch"] > 1
    finally:
        serve.delete("fused")


@pytest.mark.ray
@pytest.mark.slow
def test_openapi_documents_the_endpoints_and_limits(url):
    spec = requests.get(f"{url}/openapi.json", timeout=TIMEOUT).json()
    assert {"/v1/encode", "/v1/score", "/v1/search", "/healthz"} <= set(spec["paths"])
    encode = spec["components"]["schemas"]["EncodeRequest"]["properties"]["queries"]
    assert encode["maxItems"] == 256 and encode["items"]["maxLength"] == 2000
    assert "422" in spec["paths"]["/v1/search"]["post"]["responses"]


# -------------------------------------------------------------------------------------------- bad requests

LONG = "x" * 2001
JSON = {"Content-Type": "application/json"}
BAD_REQUESTS = [
    # id, method, path, requests kwargs, status, a fragment of the error message
    ("encode-missing-field", "post", "/v1/encode", {"json": {}}, 422, "queries: Field required"),
    ("encode-empty-list", "post", "/v1/encode", {"json": {"queries": []}}, 422, "at least 1 item"),
    ("encode-not-a-list", "post", "/v1/encode", {"json": {"queries": "jaguar"}}, 422, "valid list"),
    (
        "encode-item-not-a-string",
        "post",
        "/v1/encode",
        {"json": {"queries": ["ok", 3]}},
        422,
        "queries.1: Input should be a valid string",
    ),
    ("encode-null-item", "post", "/v1/encode", {"json": {"queries": [None]}}, 422, "valid string"),
    (
        "encode-empty-string",
        "post",
        "/v1/encode",
        {"json": {"queries": ["ok", ""]}},
        422,
        "queries.1: String should have at least 1 character",
    ),
    ("encode-blank-string", "post", "/v1/encode", {"json": {"queries": ["  \n"]}}, 422, "non-whitespace"),
    ("encode-too-many", "post", "/v1/encode", {"json": {"queries": ["q"] * 257}}, 422, "at most 256 items"),
    ("encode-too-long", "post", "/v1/encode", {"json": {"queries": [LONG]}}, 422, "at most 2000 characters"),
    (
        "encode-unknown-field",
        "post",
        "/v1/encode",
        {"json": {"queries": ["a"], "top_k": 5}},
        422,
        "top_k: Extra inputs are not permitted",
    ),
    ("encode-body-is-a-list", "post", "/v1/encode", {"json": ["a"]}, 422, "valid dictionary"),
    ("malformed-json", "post", "/v1/encode", {"data": '{"queries": [', "headers": JSON}, 422, "not valid JSON"),
    ("empty-body", "post", "/v1/encode", {"data": "", "headers": JSON}, 422, "the body is empty"),
    (
        "wrong-content-type",
        "post",
        "/v1/encode",
        {"data": '{"queries": ["a"]}', "headers": {"Content-Type": "text/plain"}},
        415,
        "Content-Type: application/json",
    ),
    ("form-content-type", "post", "/v1/search", {"data": {"query": "a"}}, 415, "application/x-www-form-urlencoded"),
    ("score-missing-field", "post", "/v1/score", {"json": {"queries": ["a"]}}, 422, "pairs: Field required"),
    ("score-empty-list", "post", "/v1/score", {"json": {"pairs": []}}, 422, "at least 1 item"),
    ("score-pair-not-an-object", "post", "/v1/score", {"json": {"pairs": [["a", "b"]]}}, 422, "pairs.0"),
    (
        "score-pair-missing-text",
        "post",
        "/v1/score",
        {"json": {"pairs": [{"query": "a"}]}},
        422,
        "pairs.0.text: Field required",
    ),
    (
        "score-text-not-a-string",
        "post",
        "/v1/score",
        {"json": {"pairs": [{"query": "a", "text": 5}]}},
        422,
        "pairs.0.text: Input should be a valid string",
    ),
    ("score-empty-query", "post", "/v1/score", {"json": {"pairs": [{"query": "", "text": "t"}]}}, 422, "pairs.0.query"),
    (
        "score-too-many",
        "post",
        "/v1/score",
        {"json": {"pairs": [{"query": "q", "text": "t"}] * 257}},
        422,
        "at most 256 items",
    ),
    (
        "score-too-long",
        "post",
        "/v1/score",
        {"json": {"pairs": [{"query": "q", "text": LONG}]}},
        422,
        "at most 2000 characters",
    ),
    (
        "score-unknown-field-in-pair",
        "post",
        "/v1/score",
        {"json": {"pairs": [{"query": "q", "text": "t", "label": 1}]}},
        422,
        "pairs.0.label: Extra inputs",
    ),
    ("search-missing-query", "post", "/v1/search", {"json": {"k": 5}}, 422, "query: Field required"),
    (
        "search-empty-query",
        "post",
        "/v1/search",
        {"json": {"query": ""}},
        422,
        "query: String should have at least 1 character",
    ),
    (
        "search-query-not-a-string",
        "post",
        "/v1/search",
        {"json": {"query": ["a"]}},
        422,
        "query: Input should be a valid string",
    ),
    ("search-query-too-long", "post", "/v1/search", {"json": {"query": LONG}}, 422, "at most 2000 characters"),
    (
        "search-k-zero",
        "post",
        "/v1/search",
        {"json": {"query": "a", "k": 0}},
        422,
        "k: Input should be greater than or equal to 1",
    ),
    ("search-k-negative", "post", "/v1/search", {"json": {"query": "a", "k": -3}}, 422, "greater than or equal to 1"),
    (
        "search-k-too-large",
        "post",
        "/v1/search",
        {"json": {"query": "a", "k": 1001}},
        422,
        "k: Input should be less than or equal to 1000",
    ),
    (
        "search-k-a-string",
        "post",
        "/v1/search",
        {"json": {"query": "a", "k": "5"}},
        422,
        "k: Input should be a valid integer",
    ),
    ("search-k-a-float", "post", "/v1/search", {"json": {"query": "a", "k": 2.5}}, 422, "valid integer"),
    ("search-k-a-bool", "post", "/v1/search", {"json": {"query": "a", "k": True}}, 422, "valid integer"),
    ("search-k-null", "post", "/v1/search", {"json": {"query": "a", "k": None}}, 422, "valid integer"),
    ("unknown-path", "post", "/v1/nothing", {"json": {}}, 404, "Not Found"),
    ("wrong-method", "get", "/v1/encode", {}, 405, "Method Not Allowed"),
]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize(
    "method,path,kwargs,status,message", [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_requests_get_a_4xx_with_a_message(url, assets, method, path, kwargs, status, message):
    r = getattr(requests, method)(url + path, timeout=TIMEOUT, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert message in body["error"], body
    assert body["model"] == model_version(assets.model)  # the version is in every response, errors included
    if status == 422:
        assert body["detail"] and all("input" not in d for d in body["detail"])  # where and why, no echo


@pytest.mark.ray
@pytest.mark.slow
def test_still_healthy_after_bad_requests(url):
    assert requests.get(f"{url}/healthz", timeout=TIMEOUT).json()["status"] == "ok"
    assert post(url, "/v1/search", {"query": "jaguar", "k": 1}).status_code == 200


# -------------------------------------------------------------------------------------------------- auth


@pytest.mark.ray
@pytest.mark.slow
def test_bearer_token_when_the_variable_is_set(secure_url, assets):
    body = {"queries": ["jaguar"]}
    assert requests.get(f"{secure_url}/healthz", timeout=TIMEOUT).json()["auth"] is True  # health stays open
    missing = post(secure_url, "/v1/encode", body)
    assert (
        missing.status_code == 401
        and missing.headers["www-authenticate"] == "Bearer"
        and "bearer token" in missing.json()["error"]
    )
    wrong = post(secure_url, "/v1/encode", body, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    basic = post(secure_url, "/v1/encode", body, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401
    invalid_unauthenticated = post(secure_url, "/v1/search", {"query": "a", "k": 0})
    assert invalid_unauthenticated.status_code == 401  # no validation details before authentication
    ok = post(secure_url, "/v1/encode", body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    np.testing.assert_array_equal(
        np.asarray(ok.json()["embeddings"], np.float32), assets.encoder.encode_queries(["jaguar"])
    )
    for path, good in (("/v1/score", {"pairs": [{"query": "a", "text": "b"}]}), ("/v1/search", {"query": "a", "k": 3})):
        assert post(secure_url, path, good).status_code == 401
        assert post(secure_url, path, good, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    # Under a route prefix (this gateway is at /secure) the Guard still reads no body before the token, and no body
    # over the limit at all (it once matched /v1/ against the prefixed path and let both through to FastAPI).
    huge = b'{"queries": [' + b'"jaguar", ' * 200_000 + b'"x"]}'
    for headers, status in (({}, 401), ({"Authorization": f"Bearer {TOKEN}"}, 413)):
        r = requests.post(
            f"{secure_url}/v1/encode",
            data=huge,
            headers={"Content-Type": "application/json", **headers},
            timeout=TIMEOUT,
        )
        assert r.status_code == status and r.json()["model"], r.text


@pytest.mark.ray
@pytest.mark.slow
def test_through_rays_proxy_a_late_request_gets_the_gateways_json_408(url, assets):
    """A gateway whose deadline no search can meet, behind the real proxy: the answer is the JSON 408, not the
    proxy's plain text, and the gateway serves the next request (its in-flight slot was given back)."""
    from ray import serve

    from serve.app import Gateway

    handles = [
        serve.get_deployment_handle(name, app_name=APP_NAME) for name in ("QueryEncoder", "Discriminator", "Retriever")
    ]
    settings = asdict(resolve_settings({**assets.settings, "request_timeout_s": 0.001, "max_in_flight": 1}))
    serve.run(
        Gateway.options(ray_actor_options={"num_cpus": 0.05}).bind(*handles, settings),
        name="late",
        route_prefix="/late",
    )
    try:
        for _ in range(3):
            r = requests.post(f"{url}/late/v1/search", json={"query": "jaguar", "k": 3}, timeout=TIMEOUT)
            assert r.status_code == 408 and r.headers["content-type"] == "application/json", r.text
            assert "within 0.001 s" in r.json()["error"]
    finally:
        serve.delete("late")


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the replica's process through /proc")
def test_a_replica_killed_mid_request_gives_a_json_503_and_the_next_request_succeeds(url):
    """The query encoder's replica is killed while it encodes: the caller gets a JSON 503 (not a bare 500 page)
    with Retry-After, and once Ray has restarted the replica the same request is served."""
    import signal
    import threading
    import time

    def replica_pids():
        return [pid for pid, _ in descendant_pids_titled("ServeReplica:crops:QueryEncoder")]  # this session's Ray

    victims = replica_pids()
    assert victims, "no QueryEncoder replica found"
    body = {"queries": [f"jaguar cubs by the river, take {i}, " + "slow motion " * 150 for i in range(256)]}
    threading.Timer(1.0, lambda: [os.kill(pid, signal.SIGKILL) for pid in victims]).start()
    with ThreadPoolExecutor(6) as pool:  # seconds of queued work on the one replica when it dies
        answers = list(pool.map(lambda _: requests.post(f"{url}/v1/encode", json=body, timeout=TIMEOUT), range(6)))
    assert {r.status_code for r in answers} <= {200, 503}, [r.text[:200] for r in answers]
    failed = [r for r in answers if r.status_code == 503]
    assert failed, "every request finished before the replica died"
    for r in failed:
        assert r.headers.get("retry-after") == "1" and "replica failed" in r.json()["error"] and r.json()["model"]
    deadline = time.time() + 90
    while True:
        r = requests.post(f"{url}/v1/encode", json={"queries": ["jaguar"]}, timeout=TIMEOUT)
        if r.status_code == 200 or time.time() > deadline:
            break
        assert r.status_code == 503 and r.json()["error"], r.text  # while it restarts: JSON 503s only
        time.sleep(1)
    assert r.status_code == 200 and len(r.json()["embeddings"]) == 1
    assert set(replica_pids()).isdisjoint(victims)  # a new replica process serves it


# ---------------------------------------------------------------------------------- no Serve needed


@pytest.fixture
def small(tmp_path):
    """An index folder of three vectors and a calibration file: enough for the checks that load no model."""
    from crops_ray.discriminator import Calibration
    from crops_ray.encoder import doc_tower_fingerprint
    from crops_ray.index import VectorIndex
    from crops_ray.plumbing import model_path

    index = VectorIndex.build(["a", "b", "c"], np.eye(3, 384, dtype=np.float32))  # MiniLM's 384
    index.meta = {"encoder": doc_tower_fingerprint(model_path("minilm"), []), "model": "minilm"}  # as evaluation does
    index.save(str(tmp_path / "index"))
    Calibration(a=10.0, b=-4.0, model="minilm", kind="bi-encoder", source="test", labelled_pairs=0, positives=0).save(
        str(tmp_path / "cal.json")
    )
    return SimpleNamespace(
        index_dir=str(tmp_path / "index"),
        settings={"index": str(tmp_path / "index"), "calibration": str(tmp_path / "cal.json"), "topology": "split"},
    )


def test_auto_topology_is_fused_on_one_node_and_split_on_a_cluster(small, monkeypatch):
    import ray

    from serve.app import resolve_topology

    auto = {**small.settings, "topology": "auto"}
    assert build_app(auto)._bound_deployment.name == "FusedGateway"  # no Ray yet: the local Ray will be one node
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}, {"Alive": False}])
    assert resolve_topology("auto") == ("split", "auto: a cluster of 2 nodes, each model scales on its own")
    assert build_app(auto)._bound_deployment.name == "Gateway"
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": False}])
    assert resolve_topology("auto")[0] == "fused" and resolve_topology("split") == ("split", "as configured")


def test_settings_refuse_missing_folders_and_unknown_keys(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an index folder"):
        resolve_settings({"index": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a packaged alias"):
        resolve_settings({"model": str(tmp_path / "no-model"), "index": str(tmp_path)})
    with pytest.raises(ValueError, match="idx"):
        ServeSettings(idx=str(tmp_path))
    (tmp_path / "index.json").write_text("{}")
    with pytest.raises(ValueError, match="default_k"):
        resolve_settings({"index": str(tmp_path), "default_k": 10, "max_k": 5})
    with pytest.raises(FileNotFoundError, match="calibration"):
        resolve_settings({"index": str(tmp_path), "calibration": str(tmp_path / "none.json")})
    s = resolve_settings({"index": os.path.relpath(tmp_path)})
    assert os.path.isabs(s.index) and s.model == "minilm"


def test_config_yaml_deploys_this_application_on_loopback():
    from ray.serve.schema import ServeDeploySchema

    with open(os.path.join(ROOT, "serve", "config.yaml")) as f:
        config = ServeDeploySchema(**yaml.safe_load(f))
    assert config.http_options.host == "127.0.0.1"
    (app,) = config.applications
    assert app.import_path == "serve.app:build_app" and app.route_prefix == "/"
    settings = ServeSettings(**app.args)  # every key is a known setting
    # The app's JSON 408 and 503 come before the proxy's plain-text ones.
    assert config.http_options.request_timeout_s > settings.request_timeout_s
    (gateway,) = [d for d in app.deployments if d.name == "Gateway"]
    assert gateway.max_ongoing_requests > settings.max_in_flight
    for d in app.deployments:
        assert d.name in DEFAULT_OPTIONS
        if d.name != "Gateway":
            # Batches can only fill when a replica accepts more requests than one batch holds.
            assert d.max_ongoing_requests > settings.max_batch_size
            assert d.autoscaling_config["max_replicas"] >= d.autoscaling_config["min_replicas"] >= 1


def test_build_app_gives_the_gateway_the_token_digest_and_the_token_itself_to_no_one(small, monkeypatch):
    """A runtime_env or an actor's arguments show in Ray's dashboard: neither may hold the token."""
    from serve.app import digest_of

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = build_app({**small.settings, "auth_token_env": TOKEN_ENV})
    gateway = app._bound_deployment
    assert gateway.name == "Gateway" and gateway.init_args[4] == digest_of(TOKEN) != TOKEN
    models = [a._bound_deployment for a in gateway.init_args[:3]]
    assert [m.name for m in models] == ["QueryEncoder", "Discriminator", "Retriever"]
    for d in [gateway, *models]:
        assert "runtime_env" not in d.ray_actor_options
        assert TOKEN not in repr(d.init_args) + repr(d.init_kwargs) + repr(d.ray_actor_options)
    monkeypatch.delenv(TOKEN_ENV)
    assert build_app(small.settings)._bound_deployment.init_args[4] is None


def test_the_pipeline_checks_its_arguments_before_starting_ray(tmp_path, small, monkeypatch, capsys):
    sys.path.insert(0, ROOT)
    from pipelines.serve import main

    with pytest.raises(SystemExit) as e:
        main(["--model", str(tmp_path / "no-model"), "--index", small.index_dir])
    assert e.value.code == 2 and "no-model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--index", str(tmp_path / "nothing")])
    assert e.value.code == 2 and "not an index folder" in capsys.readouterr().err
    monkeypatch.delenv("CROPS_SERVE_TOKEN", raising=False)
    with pytest.raises(SystemExit) as e:
        main(["--index", small.index_dir, "--host", "0.0.0.0"])
    assert e.value.code == 2 and "CROPS_SERVE_TOKEN" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--index", small.index_dir, "--set", "max_k=0"])
    assert e.value.code == 2 and "max_k" in capsys.readouterr().err


# ------------------------------------------------------------------------ the HTTP surface without Ray


class FakeBackend:
    """make_api's Backend without models: fixed answers, or the exception a dying replica raises."""

    versions = {"model": "fake@0"}

    def __init__(self, fail: Exception | None = None):
        self.fail = fail

    async def encode(self, queries):
        if self.fail:
            raise self.fail
        return np.zeros((len(queries), 2), np.float32), "fake@0"

    async def score(self, pairs):
        return np.zeros(len(pairs)), "disc@0"

    async def search(self, query, k):
        return ["v1"], [1.0], "fake@0", "index@0"

    async def health(self):
        return {"model": "fake@0"}


def _client(backend=None, token=None, **settings):
    from fastapi.testclient import TestClient

    from serve.app import make_api

    s = ServeSettings(index="unused", **settings)
    from serve.app import digest_of

    return TestClient(make_api(backend or FakeBackend(), s, digest_of(token)), raise_server_exceptions=False)


def test_healthz_answers_503_within_its_timeout_when_a_deployment_hangs():
    import asyncio
    import time

    class Stuck(FakeBackend):
        async def health(self):
            await asyncio.sleep(30)

    started = time.time()
    r = _client(Stuck(), health_timeout_s=0.3).get("/healthz")
    assert r.status_code == 503 and "within 0.3 s" in r.json()["error"] and r.headers["Retry-After"] == "5"
    assert time.time() - started < 5
    assert _client().get("/healthz").json()["status"] == "ok"


def test_a_body_over_the_limit_gets_413_before_it_is_parsed():
    client = _client(max_body_bytes=2048)
    big = {"queries": ["jaguar " * 40] * 10}  # ~3 KB of valid JSON
    r = client.post("/v1/encode", json=big)
    assert r.status_code == 413 and "2,048 bytes" in r.json()["error"] and r.json()["model"] == "fake@0"

    def chunks():  # no Content-Length: the limit still holds on the bytes actually read
        for _ in range(4):
            yield b" " * 1000

    r = client.post("/v1/encode", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert client.post("/v1/encode", json={"queries": ["jaguar"]}).status_code == 200  # under the limit: served


def test_authentication_comes_before_the_body_is_read():
    client = _client(token=TOKEN)
    for kwargs in (
        {"content": b'{"queries": [', "headers": {"Content-Type": "application/json"}},  # malformed JSON
        {"content": b"x" * 5_000_000, "headers": {"Content-Type": "application/json"}},  # and oversized
        {"json": {"queries": ["a"]}, "headers": {"Authorization": f"Basic {TOKEN}"}},
    ):
        r = client.post("/v1/encode", **kwargs)
        assert r.status_code == 401 and "bearer token" in r.json()["error"], r.text
    ok = client.post("/v1/encode", json={"queries": ["a"]}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["dim"] == 2


def test_a_dead_replica_or_a_full_queue_is_a_json_503_and_other_failures_a_json_500():
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError

    for exc, status, message in (
        (ActorDiedError(), 503, "replica failed"),
        (BackPressureError(num_queued_requests=5, max_queued_requests=5), 503, "capacity"),
        (KeyError("boom"), 500, "internal error (KeyError)"),
    ):
        r = _client(FakeBackend(fail=exc)).post("/v1/encode", json={"queries": ["a"]})
        assert r.status_code == status and message in r.json()["error"] and r.json()["model"] == "fake@0", (exc, r.text)
        assert (r.headers.get("retry-after") == "1") == (status == 503)


class Gated(FakeBackend):
    """Encode waits for ``release``: requests pile up in the gateway as they do behind a slow model."""

    def __init__(self):
        super().__init__()
        self.release, self.waiting = asyncio.Event(), 0

    async def encode(self, queries):
        self.waiting += 1
        await self.release.wait()
        return await super().encode(queries)


class Reply:
    """What a raw ASGI call answered: status, headers (lower-case names), JSON body."""

    def __init__(self, messages: list):
        start = next(m for m in messages if m["type"] == "http.response.start")
        self.status_code = start["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        self.body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")

    def json(self):
        return json.loads(self.body)


async def _asgi_post(app, path: str, payload: dict) -> Reply:
    """One POST straight into the ASGI app, as a replica's HTTP server hands it over."""
    body, sent, messages = json.dumps(payload).encode(), False, []
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http"}
    scope.update(path=path, raw_path=path.encode(), root_path="", query_string=b"", headers=headers)
    scope.update(server=("gw", 80), client=("test", 1))

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected

    async def send(message):
        messages.append(message)

    await app(scope, receive, send)
    return Reply(messages)


def _gather(app, n: int, release=None):
    """``n`` concurrent /v1/encode requests on one event loop (as a replica sees them); optionally release the
    backend once the admitted ones are waiting. Returns the replies in request order."""

    async def run():
        tasks = [asyncio.create_task(_asgi_post(app, "/v1/encode", {"queries": [f"q{i}"]})) for i in range(n)]
        if release is not None:
            while release.waiting < min(n, 2) and not all(t.done() for t in tasks):
                await asyncio.sleep(0.01)
            release.release.set()
        return await asyncio.gather(*tasks)

    return asyncio.run(run())


def test_past_max_in_flight_the_gateway_answers_a_json_503_and_then_serves_again():
    from serve.app import make_api

    backend = Gated()
    app = make_api(backend, ServeSettings(index="unused", max_in_flight=2), None)
    replies = _gather(app, 5, release=backend)
    codes = [r.status_code for r in replies]
    assert sorted(codes) == [200, 200, 503, 503, 503], codes
    for r in replies:
        if r.status_code == 503:
            assert "at capacity (2 requests" in r.json()["error"] and r.headers["retry-after"] == "1"
            assert r.json()["model"] == "fake@0"
    assert [r.status_code for r in _gather(app, 2, release=backend)] == [200, 200]  # the slots were given back


def test_a_request_past_its_deadline_gets_a_json_408_and_its_work_is_cancelled():
    import time

    from serve.app import make_api

    backend = Gated()  # never released
    app = make_api(backend, ServeSettings(index="unused", request_timeout_s=0.3, max_in_flight=1), None)
    started = time.time()
    (r,) = _gather(app, 1)
    assert r.status_code == 408 and "within 0.3 s" in r.json()["error"] and r.json()["model"] == "fake@0"
    assert time.time() - started < 5
    backend.release.set()
    (ok,) = _gather(app, 1)  # the timed-out request gave its slot back (max_in_flight=1)
    assert ok.status_code == 200


def test_an_index_the_encoder_cannot_search_is_refused_at_build_time(tmp_path, small):
    """Another dimension, no vectors, or another document encoder (fingerprint in index.json): refused by build_app."""
    from crops_ray.encoder import doc_tower_fingerprint, shallow_copy
    from crops_ray.index import VectorIndex, check_index_matches
    from crops_ray.plumbing import model_path

    def index(name, vectors, meta=None):
        built = VectorIndex.build([f"v{i}" for i in range(len(vectors))], vectors)
        built.meta = meta or {}
        built.save(str(tmp_path / name))
        return {**small.settings, "index": str(tmp_path / name)}

    with pytest.raises(ValueError, match="3-dimensional vectors, but the encoder"):
        build_app(index("dim3", np.eye(3, dtype=np.float32)))
    with pytest.raises(ValueError, match="no vectors"):
        build_app(index("empty", np.zeros((0, 384), np.float32)))
    other = shallow_copy("minilm", str(tmp_path / "minilm-1l"), num_layers=1)
    with pytest.raises(ValueError, match="another document encoder"):
        build_app(
            index(
                "other", np.eye(2, 384, dtype=np.float32), {"encoder": doc_tower_fingerprint(other, []), "model": other}
            )
        )
    ok = index(
        "mine",
        np.eye(2, 384, dtype=np.float32),
        {"encoder": doc_tower_fingerprint(model_path("minilm"), []), "model": "minilm"},
    )
    assert check_index_matches(ok["index"], "minilm").startswith("encoder fingerprint")
    unnamed = index("unnamed", np.eye(2, 384, dtype=np.float32))  # right dimension, no encoder in index.json
    with pytest.raises(ValueError, match="does not name the document encoder"):
        build_app(unnamed)
    allowed = build_app({**unnamed, "allow_unverified_index": True})
    assert allowed._bound_deployment.init_args[2]._bound_deployment.init_kwargs["checked"].startswith("dimension only")
    assert (
        build_app(ok)
        ._bound_deployment.init_args[2]
        ._bound_deployment.init_kwargs["checked"]
        .startswith("encoder fingerprint")
    )


@pytest.mark.ray
@pytest.mark.slow
def test_by_default_one_node_serves_fused_with_direct_ingress_on_its_port(small, tmp_path):
    """pipelines/serve.py with no topology or ingress named, on the local Ray it starts: it says it chose the fused
    topology and direct ingress, the replica answers HTTP on --port itself, and Serve's proxy answers above it."""
    import re
    import signal
    import subprocess
    import time

    log = tmp_path / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    for name in ("RAY_ADDRESS", "RAY_SERVE_ENABLE_DIRECT_INGRESS", *(k for k in env if "DIRECT_INGRESS" in k)):
        env.pop(name, None)
    cmd = [sys.executable, os.path.join(ROOT, "pipelines", "serve.py"), "--index", small.index_dir]
    port = free_port()
    cmd += ["--calibration", small.settings["calibration"], "--port", str(port), "--num-cpus", "2"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, url = time.time() + 240, None
        while url is None and time.time() < deadline and proc.poll() is None:
            time.sleep(1)
            found = re.search(r"ingress: direct: 1 replica\(s\) answer HTTP at (http://\S+) ", log.read_text())
            url = found.group(1) if found else None
        printed = log.read_text()
        assert url == f"http://127.0.0.1:{port}", printed[-3000:]  # the replica itself, on --port
        assert "topology fused (auto: a Ray of one node)" in printed
        proxy = re.search(r"Serve's proxy also answers at (http://\S+)\)", printed).group(1)
        assert proxy != url and requests.get(f"{proxy}/healthz", timeout=TIMEOUT).status_code == 200
        health = requests.get(f"{url}/healthz", timeout=TIMEOUT)
        assert health.status_code == 200 and health.json()["encoder_backend"] == "onnx"
        r = post(url, "/v1/search", {"query": "jaguar", "k": 2})
        assert r.status_code == 200 and len(r.json()["results"]) == 2
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
