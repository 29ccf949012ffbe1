"""The search page at / in a real headless browser: Debian's Chromium driven by Playwright, JavaScript off.

The page is served without Ray: serve.app.in_process_app (the fused gateway's app: the real deployment classes
in this process) under uvicorn in a thread, over two small real models (2-layer and 1-layer MiniLM copies saved as
``crops/model`` and ``dpr/model``, each with an index of the same 400 tiny-world videos), the world's videos and
its qrels. What the browser shows is checked against the library (encoder + index), the videos table and the qrels;
bad input against the API's own message for the same input. `make setup` installs Chromium and Playwright.
"""

import asyncio
import html
import shutil
import threading
import time
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
from conftest import free_port

CHROMIUM = shutil.which("chromium")
INDEXED_VIDEOS = 400
K = 8
TIMEOUT = 120  # seconds per HTTP request (the machine is shared)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Two shallow encoders with an index each, a fixed bi-encoder calibration (the page never scores), the world."""
    from crops_ray.discriminator import Calibration
    from crops_ray.encoder import Encoder, doc_tower_fingerprint, shallow_copy
    from crops_ray.index import VectorIndex
    from crops_ray.schema import table_files
    from crops_ray.world.generator import generate_world, world_config

    root = tmp_path_factory.mktemp("page")
    world = str(root / "world")
    generate_world(world, world_config("tiny", seed=1), progress=lambda *_: None)
    videos = pq.read_table(table_files(world, "videos")).slice(0, INDEXED_VIDEOS).to_pandas()
    models, source = {}, "minilm"
    for name, layers in (("crops", 2), ("dpr", 1)):
        model = source = shallow_copy(source, str(root / name / "model"), layers)  # dpr: crops' first layer
        encoder = Encoder.from_pretrained(model)
        index = VectorIndex.build(videos["video_id"].tolist(), encoder.encode_docs(videos["text"].tolist()))
        index.meta = {"encoder": doc_tower_fingerprint(model, []), "model": model}  # as evaluation records it
        index.save(str(root / name / "index"))
        models[name] = SimpleNamespace(model=model, index_dir=str(root / name / "index"), encoder=encoder, index=index)
    Calibration(
        a=10.0, b=-4.0, model=models["crops"].model, kind="bi-encoder", source="test", labelled_pairs=0, positives=0
    ).save(str(root / "calibration.json"))
    qrels = pq.read_table(f"{world}/eval/qrels.parquet").to_pandas()
    return SimpleNamespace(
        models=models,
        videos=videos,
        qrels=qrels,
        settings={
            "model": models["crops"].model,
            "index": models["crops"].index_dir,
            "discriminator_model": models["crops"].model,
            "calibration": str(root / "calibration.json"),
            "compare_model": models["dpr"].model,
            "compare_index": models["dpr"].index_dir,
            "videos": f"{world}/videos",
            "qrels": f"{world}/eval/qrels.parquet",
            "encoder_backend": "torch",  # answers compared with the library's PyTorch encoder
            "threads": 1,
        },
    )


@pytest.fixture(scope="module")
def url(assets):
    import uvicorn

    from serve.app import in_process_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(in_process_app(assets.settings), host="127.0.0.1", port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.1)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed: `make setup` installs Debian's chromium package")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: `make setup`")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def graded_query(assets) -> str:
    """The query that the qrels grade most videos of the indexed 400 for: its results carry grades above 0."""
    indexed = set(assets.videos["video_id"])
    counts = assets.qrels[assets.qrels["video_id"].isin(indexed)].groupby("query").size()
    return str(counts.sort_values(ascending=False, kind="stable").index[0])


def library_top_k(model, query: str) -> tuple[list[str], np.ndarray]:
    ids, scores = model.index.search(model.encoder.encode_queries([query]), K)
    return ids[0], scores[0]


def api_error(url: str, body: dict) -> str:
    r = requests.post(f"{url}/v1/search", json=body, timeout=TIMEOUT)
    assert r.status_code == 422, r.text
    return r.json()["error"]


def shown(page, label: str) -> list[dict]:
    """One column's results as the browser shows them."""
    return [
        {
            "id": hit.get_attribute("data-video-id"),
            "score": float(hit.get_attribute("data-score")),
            "grade": int(hit.get_attribute("data-grade")),
            "shared": "shared" in hit.get_attribute("class").split(),
            "text": hit.locator(".text").inner_text(),
            "rank": int(hit.locator(".rank").inner_text()),
        }
        for hit in page.locator(f'section[data-column="{label}"] li.hit').all()
    ]


@pytest.mark.slow
def test_the_page_shows_both_retrievers_with_texts_scores_overlap_and_grades(url, assets, browser):
    query = graded_query(assets)
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1366, "height": 768})
    page = context.new_page()
    fetched = []
    page.on("request", lambda r: fetched.append(r.url))
    assert page.goto(f"{url}/").status == 200
    page.fill("#q", query)
    page.fill("#k", str(K))
    page.click("#search")
    for label in ("crops", "dpr"):
        page.wait_for_selector(f'section[data-column="{label}"] li.hit')

    texts = dict(zip(assets.videos["video_id"], assets.videos["text"]))
    grades = {v: g for q, v, g in assets.qrels.itertuples(index=False) if q == query}
    columns = {label: shown(page, label) for label in ("crops", "dpr")}
    both = {h["id"] for h in columns["crops"]} & {h["id"] for h in columns["dpr"]}
    for label, hits in columns.items():
        ids, scores = library_top_k(assets.models[label], query)
        assert [h["id"] for h in hits] == ids and [h["rank"] for h in hits] == list(range(1, K + 1))
        np.testing.assert_allclose([h["score"] for h in hits], scores, atol=1e-5)
        assert [h["text"] for h in hits] == [texts[v] for v in ids]
        assert [h["grade"] for h in hits] == [grades.get(v, 0) for v in ids]
        assert [h["shared"] for h in hits] == [v in both for v in ids]
    assert 0 < len(both) < K  # the two models differ, so the mark means something
    assert page.inner_text("#shared-count") == str(len(both))
    assert any(h["grade"] > 0 for hits in columns.values() for h in hits)
    assert f'"{query}"' in page.inner_text("#grades")
    assert page.locator("#error").count() == 0 and page.locator("script").count() == 0

    # Laptop: the columns side by side; a narrow window: one above the other.
    left, right = (page.locator(f'section[data-column="{label}"]').bounding_box() for label in ("crops", "dpr"))
    assert right["x"] > left["x"] + left["width"] - 1 and abs(right["y"] - left["y"]) < 1
    page.set_viewport_size({"width": 600, "height": 900})
    top, below = (page.locator(f'section[data-column="{label}"]').bounding_box() for label in ("crops", "dpr"))
    assert below["y"] >= top["y"] + top["height"] and abs(below["x"] - top["x"]) < 1
    assert all(u.startswith(url) for u in fetched), fetched  # nothing fetched from outside
    context.close()


@pytest.mark.slow
def test_bad_input_in_the_browser_gets_the_apis_message(url, assets, browser):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{url}/")
    for q, k, body in (("   ", "5", {"query": "   ", "k": 5}), ("jaguar", "0", {"query": "jaguar", "k": 0})):
        page.fill("#q", q)
        page.fill("#k", k)
        with page.expect_navigation() as navigation:
            page.click("#search")
        assert navigation.value.status == 422
        message = page.inner_text("#error")
        assert message == api_error(url, body) and message.startswith("invalid request: ")
        assert page.locator("li.hit").count() == 0 and page.input_value("#q") == q  # the input kept, to fix
    context.close()


@pytest.mark.slow
def test_the_page_answers_bad_input_with_422_and_unknown_queries_without_grades(url, assets):
    cases = [
        ({"q": "", "k": "5"}, {"query": "", "k": 5}),
        ({"q": "jaguar", "k": "abc"}, {"query": "jaguar", "k": "abc"}),
        ({"q": "jaguar", "k": "2.5"}, {"query": "jaguar", "k": 2.5}),
        ({"q": "jaguar", "k": "1001"}, {"query": "jaguar", "k": 1001}),
        ({"q": "x" * 2001}, {"query": "x" * 2001}),
    ]
    for params, body in cases:
        r = requests.get(f"{url}/", params=params, timeout=TIMEOUT)
        assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
        message = api_error(url, body if "k" in body else {**body, "k": 10})
        assert f'id="error" role="alert">{html.escape(message)}</div>' in r.text, (message, r.text[-600:])
    r = requests.get(f"{url}/", params={"q": "<b>no such query</b>", "k": "3"}, timeout=TIMEOUT)
    assert r.status_code == 200 and "<b>no such query</b>" not in r.text  # escaped, not markup
    assert "is not a query of the evaluation data" in r.text and "data-grade" not in r.text
    assert r.text.count('class="hit') == 2 * 3


def test_with_a_token_required_the_page_is_off_and_the_api_still_asks_for_it():
    from fastapi.testclient import TestClient

    from serve.api import make_api
    from serve.app import digest_of
    from serve.page import Column, PageData, SearchPage
    from serve.settings import ServeSettings

    s = ServeSettings(index="unused", auth_token_env="CROPS_TEST_PAGE_TOKEN")
    digest = digest_of("page-token-1")
    page = SearchPage([Column("crops", None)], PageData(None, None), s)  # a backend it must never call
    client = TestClient(page.mount(make_api(SimpleNamespace(versions={}), s, digest), digest))
    for path in ("/", "/?q=jaguar&k=5"):
        r = client.get(path)
        assert r.status_code == 403 and "$CROPS_TEST_PAGE_TOKEN is set" in r.text
        assert "<form" not in r.text and 'class="hit' not in r.text
    assert client.post("/v1/search", json={"query": "jaguar"}).status_code == 401


@pytest.mark.slow
def test_build_time_checks_name_what_is_wrong(assets, tmp_path):
    import pyarrow as pa

    from serve.page import check_page_settings
    from serve.settings import column_label, resolve_settings

    assert column_label("runs/demo/seed-0/dpr/model") == "dpr" and column_label("minilm") == "minilm"
    with pytest.raises(ValueError, match="go together"):
        resolve_settings({**assets.settings, "compare_index": None})
    with pytest.raises(FileNotFoundError, match="videos"):
        resolve_settings({**assets.settings, "videos": str(tmp_path / "no-videos")})
    pq.write_table(pa.table({"video_id": ["v1"], "title": ["t"]}), str(tmp_path / "videos.parquet"))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['text'\]"):
        check_page_settings(resolve_settings({**assets.settings, "videos": str(tmp_path / "videos.parquet")}))
    swapped = {**assets.settings, "compare_index": assets.settings["index"]}  # crops' index under the dpr model
    with pytest.raises(ValueError, match="another document encoder"):
        check_page_settings(resolve_settings(swapped))


def test_a_failing_or_slow_retriever_gets_the_apis_503_or_a_408_on_the_page():
    from fastapi.testclient import TestClient
    from ray.exceptions import ActorDiedError

    from serve.api import failure, make_api
    from serve.page import Column, PageData, SearchPage
    from serve.settings import ServeSettings

    class Failing:
        versions = {"model": "fake@0"}

        def __init__(self, exc: Exception | None):
            self.exc = exc

        async def search(self, query, k):
            if self.exc is None:
                await asyncio.sleep(30)
            raise self.exc

    s = ServeSettings(index="unused", request_timeout_s=0.3)
    for backend, status, message in (
        (Failing(ActorDiedError()), 503, failure(ActorDiedError())[1]),
        (Failing(None), 408, "not answered within 0.3 s"),
    ):
        page = SearchPage([Column("crops", backend)], PageData(None, None), s)
        r = TestClient(page.mount(make_api(backend, s, None), None)).get("/?q=jaguar&k=3")
        assert r.status_code == status and message in r.text, r.text[-400:]
