"""The HTTP API: :func:`make_api` builds the FastAPI app (routes, request and response models, limits, errors, auth)
over any :class:`Backend`; the gateway's backend calls deployment handles, bench/serve.py's calls models in-process.
The search page at / (serve/page.py) is added beside it and reuses its request model and messages.

Endpoints, limits and errors are documented in serve/README.md and at ``/docs``.
"""

import asyncio
from typing import Annotated, Any, Protocol

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.guard import API_VERSION, Guard, token_matches
from serve.settings import ServeSettings


class Backend(Protocol):
    """What the API needs from the models; the gateway's backend calls deployment handles."""

    versions: dict[str, str]  # model, discriminator, index: reported in every response
    kind: str  # "dense", or "sparse": /v1/encode writes a sparse model's codes as their non-zeros (absent: dense)

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


class SparseEmbedding(BaseModel):
    """A sparse model's code: its non-zero latents (at most the model's k) and their weights."""

    indices: list[int] = Field(description="the non-zero latents, ascending, each in 0..dim-1")
    values: list[float] = Field(description="their float32 weights, positive; the code has unit length")
    dim: int = Field(description="the model's latents (the code's full length)")


class EncodeResponse(BaseModel):
    embeddings: list[list[float]] | list[SparseEmbedding] = Field(
        description="one unit-length vector per query, in request order: a dense model's dim float32 values, a "
        "sparse model's (/healthz kind: sparse) non-zeros as {indices, values, dim}"
    )
    dim: int
    model: str


def sparse_rows(codes: np.ndarray) -> list[dict]:
    """Each row of ``codes`` [n, dim] as its non-zeros: ``{"indices", "values", "dim"}``."""
    rows = []
    for row in codes:
        nonzero = np.flatnonzero(row)
        rows.append({"indices": nonzero.tolist(), "values": row[nonzero].tolist(), "dim": int(codes.shape[1])})
    return rows


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


def _unavailable(exc: Exception) -> tuple[int, str] | None:
    """503 and a message for the failures a retry can cure: a full queue, a replica that died or is restarting."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    if isinstance(exc, BackPressureError):
        return 503, "the service is at capacity (queue full); retry shortly"
    if isinstance(exc, (ActorDiedError, ActorUnavailableError, RayActorError, DeploymentUnavailableError)):
        return 503, "a model replica failed or is restarting; retry shortly"
    return None


def failure(exc: Exception) -> tuple[int, str]:
    """The status and message of a failed request: 503 where a retry can cure it (:func:`_unavailable`), else 500."""
    return _unavailable(exc) or (500, f"internal error ({type(exc).__name__}); the request was not served")


def validation_message(errors: list[dict]) -> str:
    """The one-line ``error`` of a 422: where and why the first problem is (``invalid request: k: ...``); the page
    at / shows the same line for the same input."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first["type"] == "json_invalid":
        return f"invalid request: the body is not valid JSON ({first.get('ctx', {}).get('error', '')})"
    if tuple(first["loc"]) == ("body",) and first["type"] == "missing":
        return "invalid request: the body is empty; send a JSON object"
    where = ".".join(str(x) for x in first["loc"] if x != "body") or "body"
    return f"invalid request: {where}: {first['msg']}"


def make_api(backend: Backend, settings: ServeSettings, digest: str | None) -> FastAPI:  # long: routes share a backend
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
        description="Query encoder, discriminator and retrieval (dense, or sparse) of a CroPS model. Every response "
        "carries `model` (the encoder's name@content-hash). Invalid requests get 422 (415 for a non-JSON body) with "
        f"`error` and `detail`; at most {settings.max_items} items per request and {settings.max_chars} characters "
        "per text.",
    )
    errors = {code: {"model": ErrorResponse} for code in (401, 408, 413, 415, 422, 503)}

    def error_body(message: str, detail: Any = None) -> dict:
        return {"error": message, "detail": detail, "model": backend.versions.get("model", "")}

    def error(status: int, message: str, detail: Any = None, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(error_body(message, detail), status_code=status, headers=headers)

    app.add_middleware(
        Guard,
        digest=digest,
        max_body_bytes=settings.max_body_bytes,
        error_body=error_body,
        max_in_flight=settings.max_in_flight,
        timeout_s=settings.request_timeout_s,
    )

    @app.exception_handler(Exception)
    async def failed(_: Request, exc: Exception) -> JSONResponse:
        # Never a bare 500 page: a cause a retry can cure is a 503 with Retry-After, anything else a JSON 500.
        status, message = failure(exc)
        return error(status, message, headers={"Retry-After": "1"} if status == 503 else None)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Only where and why: echoing the input back could return megabytes.
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return error(422, validation_message(exc.errors()), detail)

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
        summary="Query embeddings (a sparse model's: their non-zeros)",
    )
    async def encode(body: EncodeRequest) -> JSONResponse:
        emb, version = await backend.encode(list(body.queries))
        vectors = sparse_rows(emb) if getattr(backend, "kind", "dense") == "sparse" else emb.tolist()
        return JSONResponse({"embeddings": vectors, "dim": int(emb.shape[1]), "model": version})

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
