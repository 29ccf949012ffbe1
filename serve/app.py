"""The Ray Serve application: a FastAPI gateway over three model deployments, each scaling on its own.

    serve run serve.app:build_app model=runs/demo/model index=runs/demo/eval/index
    serve run serve/config.yaml                     # the same, with replicas and autoscaling settings
    python pipelines/serve.py --model runs/demo/model --index runs/demo/eval/index

    Gateway (FastAPI: auth, validation, JSON) --handle--> QueryEncoder   crops_ray.encoder.Encoder (query tower)
                                              --handle--> Discriminator  crops_ray.discriminator, calibrated theta
                                              --handle--> Retriever      crops_ray.index.VectorIndex (FAISS)

``/v1/search`` goes gateway -> QueryEncoder -> Retriever. The three model deployments batch concurrent requests
with ``@serve.batch`` (one forward pass or one FAISS search per batch) and run one batch at a time on a worker
thread, so the replica's event loop keeps queueing the next batch. :func:`make_api` is the HTTP surface (request
models, limits, errors, auth) over any :class:`Backend`; the gateway's backend calls deployment handles.
Endpoints, limits and errors are documented in serve/README.md and at ``/docs``.
"""

import asyncio
import hashlib
import hmac
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Annotated, Any, Protocol

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

API_VERSION = "v1"
APP_NAME = "crops"
DEFAULT_TOKEN_ENV = "CROPS_SERVE_TOKEN"

# Replica resources sized for a 2-core machine (all four fit in ~1.4 CPUs); serve/config.yaml overrides them.
# max_queued_requests bounds what waits for a replica: beyond it a caller gets 503 (Retry-After), not a longer queue.
DEFAULT_OPTIONS = {
    "Gateway": {"num_cpus": 0.1, "max_ongoing_requests": 256, "max_queued_requests": 512},
    "QueryEncoder": {"num_cpus": 0.5, "max_ongoing_requests": 128, "max_queued_requests": 512},
    "Discriminator": {"num_cpus": 0.5, "max_ongoing_requests": 128, "max_queued_requests": 512},
    "Retriever": {"num_cpus": 0.25, "max_ongoing_requests": 128, "max_queued_requests": 512},
}


class ServeSettings(BaseModel):
    """What the application serves and the limits on requests (the builder's arguments; unknown keys refused)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("minilm", description="encoder folder written by training, or 'minilm' (pretrained, zero-shot)")
    index: str = Field(description="index folder written by evaluation (OUT/index/)")
    discriminator_model: str = Field("minilm", description="discriminator backbone (alias or Hugging Face folder)")
    calibration: str | None = Field(
        None,
        description="calibration JSON; None: crops_ray.discriminator.load_or_fit_calibration (fitted once on the "
        "embedded world, cached)",
    )
    max_items: int = Field(256, ge=1, description="queries per /v1/encode, pairs per /v1/score")
    max_chars: int = Field(
        2000, ge=1, description="characters per text; longer is refused (422); within it the tokenizer truncates"
    )
    max_k: int = Field(1000, ge=1)
    default_k: int = Field(100, ge=1)
    batching: bool = Field(True, description="@serve.batch on the model deployments; False: one request per model call")
    max_batch_size: int = Field(16, ge=1, description="requests per batch")
    batch_wait_timeout_s: float = Field(0.005, ge=0)
    encode_batch_size: int = Field(64, ge=1, description="texts per forward pass inside a batch")
    threads: int | None = Field(
        None, ge=1, description="torch/FAISS threads per model replica; None: its num_cpus rounded, at least 1"
    )
    auth_token_env: str = Field(
        DEFAULT_TOKEN_ENV, description="bearer token required on /v1/* when this variable is set"
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="request body limit; larger bodies get 413 before they are parsed"
    )
    health_timeout_s: float = Field(
        5.0, gt=0, description="/healthz waits this long for every deployment, then answers 503 naming the wait"
    )


# ------------------------------------------------------------------------------------------------ versions


def content_version(folder: str, suffixes: tuple[str, ...]) -> str:
    """``name@sha12``: the folder's name and a hash of the contents of its files ending in ``suffixes``."""
    h = hashlib.sha256()
    for root, _, names in sorted(os.walk(folder)):
        for name in sorted(names):
            if name.endswith(suffixes):
                path = os.path.join(root, name)
                h.update(os.path.relpath(path, folder).encode())
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
    return f"{os.path.basename(os.path.normpath(folder))}@{h.hexdigest()[:12]}"


def model_version(name_or_path: str) -> str:
    from crops_ray.plumbing import model_path

    version = content_version(model_path(name_or_path), (".safetensors", ".bin", ".json"))
    return version if os.path.isdir(name_or_path) else f"{name_or_path}@{version.split('@')[1]}"


# ------------------------------------------------------------------------------------------------ model deployments


class _OneThread:
    """Runs model calls one at a time on a worker thread: Hugging Face fast tokenizers and the discriminator's
    embedding cache are not thread-safe, and the event loop stays free to queue requests meanwhile."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="model")

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)


def _replica_threads(threads: int | None) -> int:
    """Torch/FAISS threads: as configured, else the replica's CPU share rounded, at least 1 (no oversubscription)."""
    import ray

    return threads or max(1, int(round(ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0))))


class _ModelReplica:
    """What the three model deployments share. The model runs on one thread (:class:`_OneThread`); a subclass
    implements ``_run(requests) -> results`` (one result per request, all in one model call) and calls
    :meth:`_one` per request. With batching on, ``@serve.batch`` merges concurrent requests into one ``_run``;
    off, each request is its own call. ``info()`` reports how full the batches were (the tests check that
    concurrent requests share one)."""

    batches = requests = largest_batch = 0

    def _serve(self, batching: bool, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        self.batching = batching
        self._thread = _OneThread()
        self._batched.set_max_batch_size(max_batch_size)
        self._batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def _run(self, requests: list) -> list:
        raise NotImplementedError

    async def _one(self, request):
        if self.batching:
            return await self._batched(request)
        (result,) = await self._thread.run(self._run, [request])
        return result

    def batch_stats(self) -> dict:
        return {"batches": self.batches, "requests": self.requests, "largest_batch": self.largest_batch}


def _batched():
    """A fresh ``@serve.batch`` method per deployment class (its queue belongs to the decorated function), to be
    bound as ``_batched``: Serve recognises a method call by the function's name."""

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _batched(self, requests: list) -> list:
        self.batches, self.requests = self.batches + 1, self.requests + len(requests)
        self.largest_batch = max(self.largest_batch, len(requests))
        return await self._thread.run(self._run, requests)

    return _batched


def split_rows(rows: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """One model call's output rows back to the requests they came from (``sizes`` rows each)."""
    return np.split(rows, np.cumsum(sizes)[:-1])


def top_k(index, embeddings: np.ndarray, ks: list[int]) -> list[tuple[list[str], list[float]]]:
    """Each query's top ``ks[i]`` video ids and scores from one FAISS search at the largest k."""
    ids, scores = index.search(embeddings, max(ks))
    return [(row[:k], [float(s) for s in srow[: min(k, len(row))]]) for k, row, srow in zip(ks, ids, scores)]


@serve.deployment(name="QueryEncoder")
class QueryEncoder(_ModelReplica):
    """The query tower: a list of texts -> float32 [n, dim], unit length (exactly Encoder.encode_queries)."""

    _batched = _batched()

    def __init__(
        self,
        model: str,
        batching: bool = True,
        max_batch_size: int = 16,
        batch_wait_timeout_s: float = 0.005,
        encode_batch_size: int = 64,
        threads: int | None = None,
    ):
        import torch

        from crops_ray.encoder import Encoder

        torch.set_num_threads(_replica_threads(threads))
        self.encoder = Encoder.from_pretrained(model)
        self.encoder.eval()
        self.version = model_version(model)
        self.encode_batch_size = encode_batch_size
        self._serve(batching, max_batch_size, batch_wait_timeout_s)

    def info(self) -> dict:
        return {
            "model": self.version,
            "dim": self.encoder.dim,
            "max_length": self.encoder.config.max_length,
            **self.batch_stats(),
        }

    def _run(self, requests: list[list[str]]) -> list[np.ndarray]:
        emb = self.encoder.encode_queries([t for texts in requests for t in texts], batch_size=self.encode_batch_size)
        return split_rows(emb, [len(texts) for texts in requests])

    async def encode(self, texts: list[str]) -> tuple[np.ndarray, str]:
        return await self._one(texts), self.version


@serve.deployment(name="Discriminator")
class DiscriminatorDeployment(_ModelReplica):
    """theta(query, text) in [0, 1]: crops_ray.discriminator.Discriminator with a fixed calibration."""

    _batched = _batched()

    def __init__(
        self,
        model: str,
        calibration: dict,
        batching: bool = True,
        max_batch_size: int = 16,
        batch_wait_timeout_s: float = 0.005,
        threads: int | None = None,
    ):
        import torch

        from crops_ray.discriminator import Calibration, Discriminator, DiscriminatorConfig

        torch.set_num_threads(_replica_threads(threads))
        cal = Calibration(**calibration)
        self.disc = Discriminator(DiscriminatorConfig(model=model), cal, device="cpu")
        cal_id = hashlib.sha256(f"{cal.a!r}|{cal.b!r}".encode()).hexdigest()[:8]
        self.version = f"{model_version(self.disc.model_dir)}+cal{cal_id}"  # the weights loaded (the calibration's)
        self._serve(batching, max_batch_size, batch_wait_timeout_s)

    def info(self) -> dict:
        cal = self.disc.calibration
        return {
            "discriminator": self.version,
            "calibration": {"a": cal.a, "b": cal.b, "source": cal.source, "alpha": cal.alpha},
            **self.batch_stats(),
        }

    def _run(self, requests: list[list[tuple[str, str]]]) -> list[np.ndarray]:
        pairs = [p for pairs in requests for p in pairs]
        theta = self.disc.theta([q for q, _ in pairs], [t for _, t in pairs])
        return split_rows(theta, [len(pairs) for pairs in requests])

    async def score(self, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, str]:
        return await self._one(pairs), self.version


@serve.deployment(name="Retriever")
class Retriever(_ModelReplica):
    """Top-k video ids and inner-product scores for query embeddings (FAISS; one search per batch)."""

    _batched = _batched()

    def __init__(
        self,
        index: str,
        batching: bool = True,
        max_batch_size: int = 16,
        batch_wait_timeout_s: float = 0.005,
        threads: int | None = None,
        checked: str = "",
    ):
        import faiss

        from crops_ray.index import VectorIndex

        faiss.omp_set_num_threads(_replica_threads(threads))
        self.index = VectorIndex.load(index)
        self.version = content_version(index, (".faiss", ".parquet", ".json"))
        self.checked = checked  # how build_app matched the index to the encoder
        self._serve(batching, max_batch_size, batch_wait_timeout_s)

    def info(self) -> dict:
        return {
            "index": self.version,
            "size": len(self.index.ids),
            "dim": int(self.index.index.d),
            "checked": self.checked,
            **self.batch_stats(),
        }

    def _run(self, requests: list[tuple[np.ndarray, int]]) -> list[tuple[list[str], list[float]]]:
        return top_k(self.index, np.stack([q for q, _ in requests]), [k for _, k in requests])

    async def search(self, query: np.ndarray, k: int) -> tuple[list[str], list[float], str]:
        ids, scores = await self._one((query, k))
        return ids, scores, self.version


# ------------------------------------------------------------------------------------------------ the HTTP API


class Backend(Protocol):
    """What the API needs from the models; the gateway's backend calls deployment handles."""

    versions: dict[str, str]  # model, discriminator, index: reported in every response

    async def encode(self, queries: list[str]) -> tuple[np.ndarray, str]: ...
    async def score(self, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, str]: ...
    async def search(self, query: str, k: int) -> tuple[list[str], list[float], str, str]: ...
    async def health(self) -> dict: ...


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must contain a non-whitespace character")
    return text


def request_models(s: ServeSettings) -> dict[str, type[BaseModel]]:
    """The request bodies, with this deployment's limits in their schema (so /docs shows them)."""
    Text = Annotated[StrictStr, StringConstraints(min_length=1, max_length=s.max_chars), AfterValidator(_not_blank)]

    class EncodeRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid", json_schema_extra={"examples": [{"queries": ["jaguar cubs", "python tutorial"]}]}
        )
        queries: list[Text] = Field(
            min_length=1,
            max_length=s.max_items,
            description=f"1..{s.max_items} non-blank texts of at most {s.max_chars} characters",
        )

    class Pair(BaseModel):
        model_config = ConfigDict(extra="forbid")
        query: Text
        text: Text

    class ScoreRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={"examples": [{"pairs": [{"query": "jaguar", "text": "Jaguar cubs in the wild"}]}]},
        )
        pairs: list[Pair] = Field(
            min_length=1, max_length=s.max_items, description=f"1..{s.max_items} (query, text) pairs"
        )

    class SearchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"query": "jaguar cubs", "k": 10}]})
        query: Text
        k: StrictInt = Field(
            s.default_k,
            ge=1,
            le=s.max_k,
            description=f"results to return, 1..{s.max_k} (fewer when the index is smaller)",
        )

    return {"encode": EncodeRequest, "score": ScoreRequest, "search": SearchRequest}


class EncodeResponse(BaseModel):
    embeddings: list[list[float]] = Field(description="float32 values, one unit-length row per query, in request order")
    dim: int
    model: str


class ScoreResponse(BaseModel):
    scores: list[float] = Field(description="calibrated theta in [0, 1] per pair, in request order")
    discriminator: str
    model: str


class Hit(BaseModel):
    video_id: str
    score: float


class SearchResponse(BaseModel):
    results: list[Hit] = Field(description="best first; inner product of unit vectors (cosine)")
    index: str
    model: str


class ErrorResponse(BaseModel):
    error: str
    detail: Any = None
    model: str


class Guard:
    """ASGI middleware run before FastAPI reads a body: the bearer token on /v1/* (401) and the body limit (413).

    Authentication comes first, so an unauthenticated caller learns nothing from validation errors; the body is
    read here, at most ``max_body_bytes`` of it (chunked bodies included), and replayed to the app.
    """

    def __init__(self, app, digest: str | None, max_body_bytes: int, error_body):
        self.app, self.digest, self.max_body_bytes, self.error_body = app, digest, max_body_bytes, error_body

    async def _reply(self, send, status: int, message: str, headers: dict | None = None) -> None:
        response = JSONResponse(self.error_body(message), status_code=status, headers=headers)
        await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(f"/{API_VERSION}/"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.digest is not None:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token_matches(given.strip(), self.digest):
                return await self._reply(
                    send,
                    401,
                    "missing or invalid bearer token (Authorization: Bearer <token>)",
                    {"WWW-Authenticate": "Bearer"},
                )
        too_large = f"request body over {self.max_body_bytes:,} bytes; send fewer or shorter items"
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._reply(send, 413, too_large)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                return await self._reply(send, 413, too_large)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # after the body: disconnect notices
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def _unavailable(exc: Exception) -> tuple[int, str] | None:
    """503 and a message for the failures a retry can cure: a full queue, a replica that died or is restarting."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    if isinstance(exc, BackPressureError):
        return 503, "the service is at capacity (queue full); retry shortly"
    if isinstance(exc, (ActorDiedError, ActorUnavailableError, RayActorError, DeploymentUnavailableError)):
        return 503, "a model replica failed or is restarting; retry shortly"
    return None


def digest_of(token: str | None) -> str | None:
    """SHA-256 of a bearer token: what the gateway keeps and compares, so the token itself is in no actor's
    arguments or runtime_env (both show in Ray's dashboard); None for no token."""
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def token_matches(given: str | None, digest: str) -> bool:
    """Whether a caller's bearer token is the one whose digest the gateway holds (constant-time compare)."""
    return hmac.compare_digest(digest_of(given) or "", digest)


def make_api(backend: Backend, settings: ServeSettings, digest: str | None) -> FastAPI:
    """The FastAPI app: routes, request validation (422), auth (401 unless the bearer token's :func:`digest_of` is
    ``digest``), content type (415), all errors as JSON.

    (No ``from __future__ import annotations`` in this module: FastAPI must see the request models, which are
    local to this function, as objects rather than as names.)
    """
    models = request_models(settings)
    EncodeRequest, ScoreRequest, SearchRequest = models["encode"], models["score"], models["search"]
    bearer = HTTPBearer(auto_error=False, description=f"required when ${settings.auth_token_env} is set on the gateway")
    app = FastAPI(
        title="crops-ray",
        version=API_VERSION,
        description="Query encoder, discriminator and dense retrieval of a CroPS model. Every response carries `model` "
        "(the encoder's name@content-hash). Invalid requests get 422 (415 for a non-JSON body) with `error` and "
        f"`detail`; at most {settings.max_items} items per request and {settings.max_chars} characters per text.",
    )
    errors = {code: {"model": ErrorResponse} for code in (401, 413, 415, 422, 503)}

    def error_body(message: str, detail: Any = None) -> dict:
        return {"error": message, "detail": detail, "model": backend.versions.get("model", "")}

    def error(status: int, message: str, detail: Any = None, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(error_body(message, detail), status_code=status, headers=headers)

    app.add_middleware(Guard, digest=digest, max_body_bytes=settings.max_body_bytes, error_body=error_body)

    @app.exception_handler(Exception)
    async def failed(_: Request, exc: Exception) -> JSONResponse:
        # Never a bare 500 page: a cause a retry can cure is a 503 with Retry-After, anything else a JSON 500.
        known = _unavailable(exc)
        if known:
            return error(known[0], known[1], headers={"Retry-After": "1"})
        return error(500, f"internal error ({type(exc).__name__}); the request was not served")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Only where and why: echoing the input back could return megabytes.
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request", "type": ""}
        if first["type"] == "json_invalid":
            return error(
                422, f"invalid request: the body is not valid JSON ({first.get('ctx', {}).get('error', '')})", detail
            )
        if tuple(first["loc"]) == ("body",) and first["type"] == "missing":
            return error(422, "invalid request: the body is empty; send a JSON object", detail)
        where = ".".join(str(x) for x in first["loc"] if x != "body") or "body"
        return error(422, f"invalid request: {where}: {first['msg']}", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if digest is None:
            return
        if credentials is None or not token_matches(credentials.credentials, digest):
            raise HTTPException(
                401,
                "missing or invalid bearer token (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def json_body(request: Request) -> None:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json" and not kind.endswith("+json"):
            raise HTTPException(415, f"send a JSON body with Content-Type: application/json (got {kind or 'none'!r})")

    guarded = [Depends(authorized), Depends(json_body)]

    @app.post(
        f"/{API_VERSION}/encode",
        response_model=EncodeResponse,
        responses=errors,
        dependencies=guarded,
        summary="Query embeddings",
    )
    async def encode(body: EncodeRequest) -> JSONResponse:
        emb, version = await backend.encode(list(body.queries))
        return JSONResponse({"embeddings": emb.tolist(), "dim": int(emb.shape[1]), "model": version})

    @app.post(
        f"/{API_VERSION}/score",
        response_model=ScoreResponse,
        responses=errors,
        dependencies=guarded,
        summary="Calibrated discriminator theta",
    )
    async def score(body: ScoreRequest) -> JSONResponse:
        theta, version = await backend.score([(p.query, p.text) for p in body.pairs])
        return JSONResponse({"scores": theta.tolist(), "discriminator": version, "model": backend.versions["model"]})

    @app.post(
        f"/{API_VERSION}/search",
        response_model=SearchResponse,
        responses=errors,
        dependencies=guarded,
        summary="Top-k videos for a query",
    )
    async def search(body: SearchRequest) -> JSONResponse:
        ids, scores, model, index = await backend.search(body.query, body.k)
        return JSONResponse(
            {"results": [{"video_id": v, "score": s} for v, s in zip(ids, scores)], "index": index, "model": model}
        )

    @app.get("/healthz", summary="Liveness of every deployment, and what they serve")
    async def healthz() -> JSONResponse:
        try:
            health = await asyncio.wait_for(backend.health(), timeout=settings.health_timeout_s)
        except asyncio.TimeoutError:  # a deployment that is stuck or restarting: say so, quickly
            return JSONResponse(
                {
                    "status": "unavailable",
                    "error": f"a deployment did not answer within {settings.health_timeout_s:g} s",
                },
                status_code=503,
                headers={"Retry-After": "5"},
            )
        return JSONResponse({"status": "ok", "auth": digest is not None, **health})

    return app


# ------------------------------------------------------------------------------------------------ the gateway


class HandleBackend:
    """Backend over deployment handles (each call a DeploymentResponse awaited in the gateway's event loop)."""

    def __init__(self, encoder, discriminator, retriever):
        self.encoder, self.discriminator, self.retriever = encoder, discriminator, retriever
        self.versions: dict[str, str] = {}

    async def refresh(self) -> dict:
        enc, disc, ret = await asyncio.gather(
            self.encoder.info.remote(), self.discriminator.info.remote(), self.retriever.info.remote()
        )
        self.versions = {"model": enc["model"], "discriminator": disc["discriminator"], "index": ret["index"]}
        return {"encoder": enc, "discriminator": disc, "retriever": ret}

    async def encode(self, queries):
        return await self.encoder.encode.remote(queries)

    async def score(self, pairs):
        return await self.discriminator.score.remote(pairs)

    async def search(self, query, k):
        emb, model = await self.encoder.encode.remote([query])
        ids, scores, index = await self.retriever.search.remote(emb[0], k)
        return ids, scores, model, index

    async def health(self):
        info = await self.refresh()
        return {
            **self.versions,
            "dim": info["encoder"]["dim"],
            "index_size": info["retriever"]["size"],
            "index_check": info["retriever"].get("checked", ""),
            "calibration": info["discriminator"]["calibration"],
        }


@serve.deployment(name="Gateway")
@serve.ingress()
class Gateway:
    """The FastAPI ingress. The app is built per replica (``__serve_build_asgi_app__``) so its request models
    carry the configured limits."""

    async def __init__(self, encoder, discriminator, retriever, settings: dict, token_digest: str | None = None):
        self.settings = ServeSettings(**settings)
        # The builder passes the token's digest; a gateway deployed by hand may read the token from its environment.
        self.digest = token_digest or digest_of(os.environ.get(self.settings.auth_token_env))
        self.backend = HandleBackend(encoder, discriminator, retriever)
        await self.backend.refresh()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return make_api(self.backend, self.settings, self.digest)


# ------------------------------------------------------------------------------------------------ the builder


def resolve_settings(args: dict | ServeSettings) -> ServeSettings:
    """Validated settings with absolute paths (replicas may start elsewhere); clear errors for missing folders."""
    from crops_ray.plumbing import model_path

    s = args if isinstance(args, ServeSettings) else ServeSettings(**args)
    updates: dict[str, Any] = {}
    for key in ("model", "discriminator_model"):
        value = getattr(s, key)
        model_path(value)  # FileNotFoundError names what is neither a folder nor a packaged alias
        if os.path.isdir(value):
            updates[key] = os.path.abspath(value)
    if not os.path.exists(os.path.join(s.index, "index.json")):
        raise FileNotFoundError(f"index {s.index!r} is not an index folder (written by evaluation as OUT/index/)")
    updates["index"] = os.path.abspath(s.index)
    if s.calibration:
        if not os.path.exists(s.calibration):
            raise FileNotFoundError(f"calibration {s.calibration!r} does not exist")
        updates["calibration"] = os.path.abspath(s.calibration)
    if s.default_k > s.max_k:
        raise ValueError(f"default_k {s.default_k} > max_k {s.max_k}")
    return s.model_copy(update=updates)


def build_app(args: dict) -> serve.Application:
    """The application: ``serve run serve.app:build_app model=... index=...``, serve/config.yaml, or serve.run().

    The discriminator's calibration is resolved here, once, so every replica scores with the same one.
    """
    from crops_ray.discriminator import DiscriminatorConfig, calibrated_weights, load_or_fit_calibration
    from crops_ray.index import check_index_matches

    s = resolve_settings(args)
    disc_cfg = DiscriminatorConfig(model=s.discriminator_model, calibration=s.calibration)
    calibration = load_or_fit_calibration(disc_cfg)
    calibrated_weights(calibration, disc_cfg)  # weights that are gone fail here, not in every replica
    index_check = check_index_matches(
        s.index, s.model
    )  # another encoder's index, another dimension, no vectors: refused
    batch = {
        "batching": s.batching,
        "max_batch_size": s.max_batch_size,
        "batch_wait_timeout_s": s.batch_wait_timeout_s,
        "threads": s.threads,
    }
    # Only the token's digest travels to the gateway: a runtime_env or an actor's arguments show in the dashboard.
    digest = digest_of(os.environ.get(s.auth_token_env))

    def options(name: str) -> dict:
        o = dict(DEFAULT_OPTIONS[name])
        return {"ray_actor_options": {"num_cpus": o.pop("num_cpus")}, **o}

    encoder = QueryEncoder.options(**options("QueryEncoder")).bind(
        s.model, encode_batch_size=s.encode_batch_size, **batch
    )
    discriminator = DiscriminatorDeployment.options(**options("Discriminator")).bind(
        s.discriminator_model, asdict(calibration), **batch
    )
    retriever = Retriever.options(**options("Retriever")).bind(s.index, checked=index_check, **batch)
    return Gateway.options(**options("Gateway")).bind(encoder, discriminator, retriever, s.model_dump(), digest)
