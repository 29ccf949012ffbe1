"""The Ray Serve application: a FastAPI gateway over three model deployments, each scaling on its own.

    serve run serve.app:build_app model=runs/demo/model index=runs/demo/eval/index
    serve run serve/config.yaml                     # the same, with replicas and autoscaling settings
    python pipelines/serve.py --model runs/demo/model --index runs/demo/eval/index

    Gateway (FastAPI: auth, validation, JSON) --handle--> QueryEncoder   crops_ray.encoder.Encoder (query tower)
                                              --handle--> Discriminator  crops_ray.discriminator, calibrated theta
                                              --handle--> Retriever      crops_ray.index.VectorIndex (FAISS), or
                                                                         a sparse model's SparseIndex

``/v1/search`` goes gateway -> QueryEncoder -> Retriever. This file holds the gateway (:class:`Gateway`, its
:class:`HandleBackend`), the replica sizes (``DEFAULT_OPTIONS``) and the builder :func:`build_app`; the rest is in

    serve/settings.py     ServeSettings, resolve_settings, content_version, model_version
    serve/deployments.py  QueryEncoder, DiscriminatorDeployment, Retriever (@serve.batch on a worker thread)
    serve/api.py          make_api: the HTTP surface (request models, limits, errors) over any Backend
    serve/guard.py        Guard (bearer token, body limit) and token digests
    serve/page.py         SearchPage: the search page at / (two retrievers side by side), mounted beside the API

and is re-exported here, so ``from serve.app import ...`` keeps working. Endpoints, limits and errors are
documented in serve/README.md and at ``/docs``.
"""

import asyncio
import inspect
import os
from dataclasses import asdict, replace

from fastapi import FastAPI
from ray import serve

from serve.api import Backend, make_api, request_models
from serve.deployments import DiscriminatorDeployment, QueryEncoder, Retriever
from serve.guard import API_VERSION, Guard, digest_of
from serve.page import SearchPage, check_page_settings
from serve.settings import DEFAULT_TOKEN_ENV, ServeSettings, content_version, model_version, resolve_settings

__all__ = [
    "API_VERSION",
    "APP_NAME",
    "DEFAULT_OPTIONS",
    "DEFAULT_TOKEN_ENV",
    "Backend",
    "DiscriminatorDeployment",
    "FusedGateway",
    "Gateway",
    "Guard",
    "HandleBackend",
    "QueryEncoder",
    "Retriever",
    "ServeSettings",
    "build_app",
    "comparison_backend",
    "in_process_app",
    "local_backend",
    "content_version",
    "direct_ingress_urls",
    "resolve_topology",
    "digest_of",
    "make_api",
    "model_version",
    "request_models",
    "resolve_settings",
]

APP_NAME = "crops"

# Replica resources sized for a 2-core machine (all four fit in ~1.4 CPUs); serve/config.yaml overrides them.
# max_queued_requests bounds what waits for a replica: beyond it a caller gets 503 (Retry-After), not a longer queue.
# An ingress accepts 4x its settings' max_in_flight (256): past max_in_flight its Guard answers a JSON 503 itself, so
# Ray's proxy queue (whose 503 is plain text) fills only past 1024 + 512 requests at once.
DEFAULT_OPTIONS = {
    "Gateway": {"num_cpus": 0.1, "max_ongoing_requests": 1024, "max_queued_requests": 512},
    "QueryEncoder": {"num_cpus": 0.5, "max_ongoing_requests": 128, "max_queued_requests": 512},
    "Discriminator": {"num_cpus": 0.5, "max_ongoing_requests": 128, "max_queued_requests": 512},
    "Retriever": {"num_cpus": 0.25, "max_ongoing_requests": 128, "max_queued_requests": 512},
    "FusedGateway": {"num_cpus": 1.0, "max_ongoing_requests": 1024, "max_queued_requests": 512},
}


# ------------------------------------------------------------------------------------------------ the gateway


class HandleBackend:
    """Backend over the three model deployments: through deployment handles (each call a DeploymentResponse
    awaited in the gateway's event loop) or, with ``local``, the deployments' own classes in this process (the
    fused topology: the same batching and model threads, no hop between processes)."""

    def __init__(self, encoder, discriminator, retriever, local: bool = False):
        self.encoder, self.discriminator, self.retriever = encoder, discriminator, retriever
        self.local = local
        self.versions: dict[str, str] = {}
        self.kind = "dense"  # the encoder's: "sparse" codes are searched through a sparse index (set by refresh)

    async def _call(self, target, method: str, *args):
        if not self.local:
            return await getattr(target, method).remote(*args)
        result = getattr(target, method)(*args)
        return await result if inspect.isawaitable(result) else result

    async def refresh(self) -> dict:
        enc, disc, ret = await asyncio.gather(
            self._call(self.encoder, "info"), self._call(self.discriminator, "info"), self._call(self.retriever, "info")
        )
        self.versions = {"model": enc["model"], "discriminator": disc["discriminator"], "index": ret["index"]}
        self.kind = enc["kind"]
        return {"encoder": enc, "discriminator": disc, "retriever": ret}

    async def encode(self, queries):
        return await self._call(self.encoder, "encode", queries)

    async def score(self, pairs):
        return await self._call(self.discriminator, "score", pairs)

    async def search(self, query, k):
        emb, model = await self._call(self.encoder, "encode", [query])
        ids, scores, index = await self._call(self.retriever, "search", emb[0], k)
        return ids, scores, model, index

    async def health(self):
        info = await self.refresh()
        return {
            **self.versions,
            "kind": self.kind,
            "encoder_backend": info["encoder"].get("backend", "torch"),
            "dim": info["encoder"]["dim"],
            "index_size": info["retriever"]["size"],
            "index_check": info["retriever"].get("checked", ""),
            "gate": {"kind": info["discriminator"]["kind"], "weights": info["discriminator"]["weights"]},
            "calibration": info["discriminator"]["calibration"],
        }


def local_backend(models: dict) -> HandleBackend:
    """The three model deployments' classes in this process (the fused topology; ``models`` as :func:`model_args`
    builds it)."""
    return HandleBackend(
        QueryEncoder.func_or_class(**models["encoder"]),
        DiscriminatorDeployment.func_or_class(**models["discriminator"]),
        Retriever.func_or_class(**models["retriever"]),
        local=True,
    )


def comparison_backend(s: ServeSettings) -> HandleBackend | None:
    """The search page's comparison retriever (``compare_model`` and ``compare_index``) in this process, or None.

    For people, not traffic: no batching, PyTorch (no ONNX export to make), and the model replicas' thread count
    (torch's and FAISS's are per process, so a different one here would change theirs in a fused replica)."""
    if not s.compare_model:
        return None
    encoder = QueryEncoder.func_or_class(model=s.compare_model, batching=False, threads=s.threads, backend="torch")
    retriever = Retriever.func_or_class(index=s.compare_index, batching=False, threads=s.threads)
    return HandleBackend(encoder, None, retriever, local=True)


class _Ingress:
    """What both gateways share: the settings, the token's digest and the FastAPI app, built per replica
    (``__serve_build_asgi_app__``) so that its request models carry the configured limits, with the search page
    (serve/page.py) at / beside the API."""

    async def _start(self, settings: dict, token_digest: str | None, backend: HandleBackend) -> None:
        self.settings = ServeSettings(**settings)
        # The builder passes the token's digest; a gateway deployed by hand may read the token from its environment.
        self.digest = token_digest or digest_of(os.environ.get(self.settings.auth_token_env))
        self.backend = backend
        await backend.refresh()
        self.page = SearchPage.load(self.settings, backend, comparison_backend(self.settings))

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self.page.mount(make_api(self.backend, self.settings, self.digest), self.digest)


@serve.deployment(name="Gateway")
@serve.ingress()
class Gateway(_Ingress):
    """The FastAPI ingress over the three model deployments' handles."""

    async def __init__(self, encoder, discriminator, retriever, settings: dict, token_digest: str | None = None):
        await self._start(settings, token_digest, HandleBackend(encoder, discriminator, retriever))


@serve.deployment(name="FusedGateway")
@serve.ingress()
class FusedGateway(_Ingress):
    """The fused topology: the FastAPI ingress and the three models in one replica (``topology: fused``).

    On a small node the processes of the split topology (proxy, gateway, encoder, retriever) compete for the same
    cores and every search crosses two handles; here a request crosses only the proxy. Replicas scale as one."""

    async def __init__(self, models: dict, settings: dict, token_digest: str | None = None):
        await self._start(settings, token_digest, local_backend(models))

    def encoder_info(self) -> dict:
        """The encoder's ``info()`` (batch counters included), for a deployment handle."""
        return self.backend.encoder.info()


# ------------------------------------------------------------------------------------------------ direct ingress


def direct_ingress_urls(app_name: str, host: str) -> list[str]:
    """The URLs of an application's ingress replicas when Serve runs with direct ingress.

    Ray 2.60's direct ingress (``RAY_SERVE_ENABLE_DIRECT_INGRESS=1`` in the environment of every Ray process,
    experimental in Ray) lets each ingress replica answer HTTP itself on a port of its own (30000-31000), with no
    proxy in between: a load balancer, not Serve, then spreads requests over the replicas. The replicas bind the
    ``http_options`` host; their ports come from the Serve controller's target groups.
    """
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    groups = ray.get(controller.get_target_groups.remote(app_name))
    prefix = "" if not groups else groups[0].route_prefix.rstrip("/")
    return [f"http://{host}:{t.port}{prefix}" for g in groups if g.protocol == "HTTP" for t in g.targets]


# ------------------------------------------------------------------------------------------------ the builder


def resolve_topology(topology: str) -> tuple[str, str]:
    """``auto`` made concrete, and why: fused on a Ray of one node (the split topology's four processes would
    compete for its cores, and every search would cross two handles more: 0.21-0.27x a plain app against fused's
    0.86-0.99x in bench/serve.py), split on a cluster, where each model scales on its own."""
    if topology != "auto":
        return topology, "as configured"
    import ray

    nodes = sum(1 for n in ray.nodes() if n.get("Alive")) if ray.is_initialized() else 1
    if nodes <= 1:
        return "fused", "auto: a Ray of one node"
    return "split", f"auto: a cluster of {nodes} nodes, each model scales on its own"


def model_args(s: ServeSettings) -> dict:
    """The three model deployments' arguments, checked: the discriminator's calibration resolved once, so every
    replica scores with the same one; the index matched to the encoder; an ONNX encoder backend's query tower
    exported once, into the cache every replica on this node reads; the search page's tables and comparison index."""
    from crops_ray.discriminator import Calibration, DiscriminatorConfig, calibrated_weights
    from crops_ray.index import check_index_matches

    if not s.calibration:
        raise ValueError(
            "Serve scores with the gate the data engine trained on your logs: pass calibration= the "
            "discriminator_calibration.json that build_data wrote (it names the gate's weights)"
        )
    calibration = Calibration.load(s.calibration)
    disc_cfg = DiscriminatorConfig(model=s.discriminator_model, kind=calibration.kind, calibration=s.calibration)
    calibrated_weights(calibration, disc_cfg)  # weights that are gone fail here, not in every replica
    # another encoder's index, another dimension, no vectors, no encoder named: refused
    index_check = check_index_matches(s.index, s.model, allow_unverified=s.allow_unverified_index)
    if s.encoder_backend != "torch":
        from crops_ray.onnx_encoder import OnnxEncoder

        OnnxEncoder.from_pretrained(s.model, quantize=s.encoder_backend == "onnx-int8").session("query")
    check_page_settings(s)  # a missing column or a comparison index its model cannot search: refused here
    batch = {
        "batching": s.batching,
        "max_batch_size": s.max_batch_size,
        "batch_wait_timeout_s": s.batch_wait_timeout_s,
        "threads": s.threads,
    }
    return {
        "encoder": {"model": s.model, "encode_batch_size": s.encode_batch_size, "backend": s.encoder_backend, **batch},
        "discriminator": {"model": s.discriminator_model, "calibration": asdict(calibration), **batch},
        "retriever": {"index": s.index, "checked": index_check, **batch},
    }


def build_app(args: dict) -> serve.Application:
    """The application: ``serve run serve.app:build_app model=... index=...``, serve/config.yaml, or serve.run().
    Everything that can be checked before a replica starts is checked here (:func:`model_args`)."""
    s = resolve_settings(args)
    models = model_args(s)
    # Only the token's digest travels to the gateway: a runtime_env or an actor's arguments show in the dashboard.
    digest = digest_of(os.environ.get(s.auth_token_env))

    def options(name: str) -> dict:
        o = dict(DEFAULT_OPTIONS[name])
        if name in ("Gateway", "FusedGateway"):  # the Guard's JSON 503 answers before the proxy's plain-text one
            o["max_ongoing_requests"] = max(o["max_ongoing_requests"], 4 * s.max_in_flight)
        return {"ray_actor_options": {"num_cpus": o.pop("num_cpus")}, **o}

    topology, why = resolve_topology(s.topology)
    print(f"serve: topology {topology} ({why})", flush=True)
    if topology == "fused":
        return FusedGateway.options(**options("FusedGateway")).bind(models, asdict(s), digest)
    encoder = QueryEncoder.options(**options("QueryEncoder")).bind(**models["encoder"])
    discriminator = DiscriminatorDeployment.options(**options("Discriminator")).bind(**models["discriminator"])
    retriever = Retriever.options(**options("Retriever")).bind(**models["retriever"])
    return Gateway.options(**options("Gateway")).bind(encoder, discriminator, retriever, asdict(s), digest)


def in_process_app(args: dict | ServeSettings, digest: str | None = None) -> FastAPI:
    """The fused gateway's app (API and search page) in this process, without Ray: for scripts that serve the page
    with uvicorn (scripts/page_screenshot.py) and tests. ``@serve.batch`` needs a Serve replica, so batching is off;
    with no Ray to size a replica, ``threads`` left unset means this machine's cores."""
    s = resolve_settings(args)
    s = replace(s, batching=False, threads=s.threads or os.cpu_count() or 1)
    ingress = _Ingress()  # what a FusedGateway replica does, in this process
    asyncio.run(ingress._start(asdict(s), digest, local_backend(model_args(s))))
    return ingress.__serve_build_asgi_app__()
