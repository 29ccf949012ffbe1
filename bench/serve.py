"""Benchmark: /v1/encode and /v1/search over HTTP on 127.0.0.1: the default path (``pipelines/serve.py`` as
``make serve`` starts it: on one node, fused with direct ingress on its port), Ray Serve applications in this
process's Ray (the split topology with batching on and off, the fused topology with batching on), and a plain
single-process FastAPI app (uvicorn) holding the same model and index, with batching on (a :class:`MicroBatcher`
merging concurrent requests the way ``@serve.batch`` does, same batch size and wait) and off: the baselines a user
would otherwise write. All serve serve/api.py's ``make_api`` (same validation, same JSON), so only the serving
differs.

Bounded: per row a warm-up, then a fixed number of requests at each concurrency from an aiohttp client in this
process, split into rounds that alternate the servers (all up at once; one loaded at a time), so a shared machine's
other work falls on each alike. One request is one query (an online search box). Every request must answer 200: any
5xx or other error fails the run (exit 1). Prints one markdown table with each row's ratio to the plain app with the
same batching and to the unbatched plain app.

    .venv/bin/python bench/serve.py [--model minilm] [--index runs/demo/eval/index] [--requests 2000] \
        [--concurrency 1,8,32] [--servers default,split-on,split-off,fused-on] [--direct-ingress]

Without --index, the tiny world's 1,032 videos are encoded with --model into a temporary index. The model replicas
and the baselines use the same number of torch threads (--threads, default 2). Without --calibration, /v1/score's
gate is the zero-shot bi-encoder calibrated on the tiny world's labelled pairs (a stand-in: serving cost is measured).
--direct-ingress applies to the applications in this process's Ray; the default path chooses its own ingress.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from crops_ray.onnx_encoder import BACKENDS  # noqa: E402  (no Ray Serve import: see main)

DEFAULT_REQUESTS = 300
DEFAULT_CONCURRENCY = 8
DEFAULT_WARMUP = 16
DEFAULT_ROUNDS = 3
DEFAULT_THREADS = 2
SEARCH_K = 100
REQUEST_TIMEOUT_S = 120
SERVER_START_TIMEOUT_S = 300
WORLD_SEED = 0
PLAIN = "plain FastAPI (uvicorn, 1 process)"
# (topology, batching label, batching): the Serve applications, each alongside the plain app with the same batching
SERVE_APPS = (("split", "on", True), ("split", "off", False), ("fused", "on", True))
# The default path: pipelines/serve.py as `make serve` starts it (on one node: fused, direct ingress on its port).
DEFAULT_SERVER = "default: pipelines/serve.py"
SERVER_CHOICES = ("default", *(f"{t}-{b}" for t, b, _ in SERVE_APPS))


# ------------------------------------------------------------------------------------------- the baseline


class MicroBatcher:
    """What ``@serve.batch`` does, in one process: calls that arrive within ``wait_s`` of the first (up to
    ``max_size``) become one ``fn(items) -> results`` on the model thread; one batch runs at a time, as Serve's
    default ``max_concurrent_batches=1``."""

    def __init__(self, fn, run, max_size: int, wait_s: float):
        self.fn, self.run, self.max_size, self.wait_s = fn, run, max_size, wait_s
        self.queue: asyncio.Queue | None = None

    async def __call__(self, item):
        loop = asyncio.get_running_loop()
        if self.queue is None:
            self.queue = asyncio.Queue()
            self._task = loop.create_task(self._loop())
        future = loop.create_future()
        await self.queue.put((item, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_size and (left := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            try:
                results = await self.run(self.fn, [item for item, _ in batch])
            except Exception as exc:  # every caller of the batch gets the error
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result(result)


class LocalBackend:
    """The models in this process, as a plain FastAPI app would hold them; one model call at a time on a worker
    thread (a sync route would run them on a thread pool, but Hugging Face fast tokenizers are not thread-safe).
    With ``batching``, concurrent requests are merged the way the Serve deployments merge them (:class:`MicroBatcher`
    with the same batch size and wait)."""

    def __init__(self, settings, calibration, threads: int, batching: bool = False):
        import torch

        from crops_ray.discriminator import Discriminator, DiscriminatorConfig
        from crops_ray.index import VectorIndex
        from crops_ray.onnx_encoder import load_encoder
        from serve.app import content_version, model_version

        torch.set_num_threads(threads)
        self.encoder = load_encoder(settings.model, settings.encoder_backend, threads=threads)
        self.index = VectorIndex.load(settings.index)
        disc_cfg = DiscriminatorConfig(model=settings.discriminator_model, kind=calibration.kind)
        self.disc = Discriminator(disc_cfg, calibration, device="cpu")
        self.versions = {
            "model": model_version(settings.model, settings.encoder_backend),
            "discriminator": model_version(settings.discriminator_model),
            "index": content_version(settings.index, (".faiss", ".parquet", ".json")),
        }
        self._pool = ThreadPoolExecutor(1)
        self.batching = batching
        self._encode_batch = MicroBatcher(
            self._encode_many, self._run, settings.max_batch_size, settings.batch_wait_timeout_s
        )
        self._search_batch = MicroBatcher(
            self._search_many, self._run, settings.max_batch_size, settings.batch_wait_timeout_s
        )

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _encode_many(self, requests: list[list[str]]) -> list:
        from serve.deployments import split_rows  # the deployments' own batch helpers (imported late: see main)

        return split_rows(self.encoder.encode_queries([q for qs in requests for q in qs]), [len(qs) for qs in requests])

    def _search_many(self, requests: list[tuple[str, int]]) -> list:
        from serve.deployments import top_k

        return top_k(self.index, self.encoder.encode_queries([q for q, _ in requests]), [k for _, k in requests])

    async def _one(self, batcher: MicroBatcher, request):
        """One request: through the batcher, or alone as a batch of one (the same function either way)."""
        if self.batching:
            return await batcher(request)
        (result,) = await self._run(batcher.fn, [request])
        return result

    async def encode(self, queries):
        return await self._one(self._encode_batch, queries), self.versions["model"]

    async def score(self, pairs):
        return await self._run(self.disc.theta, [q for q, _ in pairs], [t for _, t in pairs]), self.versions[
            "discriminator"
        ]

    async def search(self, query, k):
        ids, scores = await self._one(self._search_batch, (query, k))
        return ids, scores, self.versions["model"], self.versions["index"]

    async def health(self):
        return dict(self.versions)


def run_plain_server(settings_json: str, port: int, threads: int, batching: bool) -> None:
    import uvicorn

    from crops_ray.discriminator import Calibration
    from serve.app import ServeSettings, make_api

    settings = ServeSettings(**json.loads(settings_json))
    calibration = Calibration.load(settings.calibration)
    app = make_api(LocalBackend(settings, calibration, threads, batching), settings, None)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ------------------------------------------------------------------------------------------- the load


async def load(
    url: str, path: str, bodies: list[dict], requests: int, concurrency: int
) -> tuple[list[tuple[int, float]], float]:
    """``requests`` POSTs kept ``concurrency`` in flight: (status, seconds) per request, and the wall time."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one(i: int) -> tuple[int, float]:
            started = time.perf_counter()
            try:
                async with session.post(url + path, json=bodies[i % len(bodies)]) as r:
                    await r.read()
                    return r.status, time.perf_counter() - started
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return 599, time.perf_counter() - started  # no answer counts as a server error

        results: list[tuple[int, float]] = []
        indices = iter(range(requests))  # shared: each worker takes the next request when its last one answered

        async def worker() -> None:
            for i in indices:
                results.append(await one(i))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return results, time.perf_counter() - started


def summarize(results: list[tuple[int, float]], wall: float) -> dict:
    latencies = sorted(t for _, t in results)
    statuses = [s for s, _ in results]
    return {
        "requests": len(results),
        "rps": len(results) / wall,
        "p50_ms": 1e3 * statistics.median(latencies),
        "p99_ms": 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "5xx": sum(s >= 500 for s in statuses),
        "other_errors": sum(s != 200 and s < 500 for s in statuses),
    }


def wait_healthy(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    import requests

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            log = getattr(proc, "log", None)
            tail = open(log).read()[-3000:] if log and os.path.exists(log) else ""
            raise RuntimeError(f"the server at {url} exited with {proc.returncode}\n{tail}")
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout_s:.0f}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------- the run


def build_index(model: str, folder: str) -> list[str]:
    """Encode the tiny world's videos into ``folder`` (recording the encoder, as evaluation does); return its
    evaluation queries (the request texts)."""
    import pyarrow.parquet as pq

    from crops_ray.encoder import Encoder, doc_tower_fingerprint
    from crops_ray.index import VectorIndex
    from crops_ray.plumbing import model_path
    from crops_ray.schema import table_files
    from crops_ray.world.generator import generate_world, world_config

    world = f"{folder}/world"
    generate_world(world, world_config("tiny", seed=WORLD_SEED), progress=lambda *_: None)
    videos = pq.read_table(table_files(world, "videos"), columns=["video_id", "text"])
    encoder = Encoder.from_pretrained(model)
    index = VectorIndex.build(videos["video_id"].to_pylist(), encoder.encode_docs(videos["text"].to_pylist()))
    index.meta = {"encoder": doc_tower_fingerprint(model_path(model), []), "model": model}
    index.save(f"{folder}/index")
    return pq.read_table(f"{world}/eval/queries.parquet")["query"].to_pylist()


def build_calibration(model: str, folder: str) -> str:
    """A gate calibration for /v1/score: the zero-shot bi-encoder fitted on the tiny world's labelled pairs (a
    benchmark's stand-in for the one build_data trains on a team's logs; serving cost is what is measured here)."""
    from crops_ray.discriminator import Discriminator, DiscriminatorConfig, fit_calibration
    from crops_ray.world.labelled_pairs import world_labelled_pairs

    world = f"{folder}/world"
    fit, held = (world_labelled_pairs(world, 200, heldout=h, seed=WORLD_SEED) for h in (False, True))
    disc = Discriminator(DiscriminatorConfig(model=model, kind="bi-encoder"))
    fit_calibration(disc, fit, held, "bench", alpha=0.6).save(f"{folder}/calibration.json")
    return f"{folder}/calibration.json"


def start_default_server(settings, port: int, threads: int, log: str) -> subprocess.Popen:
    """``pipelines/serve.py`` as a user starts it (``make serve``), choosing its topology and ingress itself, with
    its own local Ray; its output goes to ``log``."""
    cmd = [sys.executable, os.path.join(ROOT, "pipelines", "serve.py"), "--model", settings.model]
    cmd += ["--index", settings.index, "--calibration", settings.calibration, "--port", str(port)]
    cmd += ["--set", f"threads={threads}", "--set", f"encoder_backend={settings.encoder_backend}"]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_SERVE_ENABLE_DIRECT_INGRESS")}
    with open(log, "w") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def bench_queries(folder: str) -> list[str]:
    import pyarrow.parquet as pq

    from crops_ray.world.generator import generate_world, world_config

    generate_world(f"{folder}/world", world_config("tiny", seed=WORLD_SEED), progress=lambda *_: None)
    return pq.read_table(f"{folder}/world/eval/queries.parquet")["query"].to_pylist()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm")
    p.add_argument("--index", help="an index folder for --model (default: encode the tiny world into a temporary one)")
    p.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="timed requests per row")
    p.add_argument(
        "--concurrency", default=str(DEFAULT_CONCURRENCY), help="requests kept in flight; a comma list for several"
    )
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    p.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_ROUNDS,
        help="the requests are split into rounds that alternate the servers",
    )
    p.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help="torch threads per model replica and in the baseline"
    )
    p.add_argument(
        "--encoder-backend",
        choices=BACKENDS,
        help="the query encoder's runtime in every server (default: Serve's default)",
    )
    p.add_argument(
        "--direct-ingress",
        action="store_true",
        help="Serve with Ray's direct ingress: the ingress replicas answer HTTP themselves, no proxy",
    )
    p.add_argument("--calibration", help="the gate's calibration JSON (default: fitted on the tiny world, zero-shot)")
    p.add_argument(
        "--servers",
        default=",".join(SERVER_CHOICES),
        help=f"comma-separated subset of {','.join(SERVER_CHOICES)} (the plain apps always run: they are the baseline)",
    )
    p.add_argument("--plain-server", action="store_true", help=argparse.SUPPRESS)  # internal: the baseline process
    p.add_argument("--batching", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--settings-json", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.plain_server:
        run_plain_server(args.settings_json, args.port, args.threads, args.batching)
        return 0
    levels = [int(c) for c in str(args.concurrency).split(",")]
    chosen = [s for s in args.servers.split(",") if s and s != "plain"]
    if set(chosen) - set(SERVER_CHOICES):
        p.error(f"unknown servers {sorted(set(chosen) - set(SERVER_CHOICES))}; choose from {SERVER_CHOICES}")
    serve_apps = [a for a in SERVE_APPS if f"{a[0]}-{a[1]}" in chosen]

    if args.direct_ingress:  # read when Ray Serve is imported, and by the local Ray's processes
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
    from ray import serve

    from crops_ray.runtime import init_ray
    from serve.app import build_app, direct_ingress_urls, resolve_settings

    tmp = tempfile.TemporaryDirectory(prefix="crops-bench-serve-")
    started = time.time()
    if args.index:
        index, queries = args.index, bench_queries(tmp.name)
    else:
        print(f"encoding the tiny world's videos with {args.model} into a temporary index", flush=True)
        index, queries = f"{tmp.name}/index", build_index(args.model, tmp.name)
    if not args.calibration:  # the tiny world is in tmp either way (bench_queries and build_index write it)
        args.calibration = build_calibration("minilm", tmp.name)
    backend = {"encoder_backend": args.encoder_backend} if args.encoder_backend else {}
    settings = resolve_settings(
        {"model": args.model, "index": index, "threads": args.threads, "calibration": args.calibration, **backend}
    )
    bodies = {
        "/v1/encode": [{"queries": [q]} for q in queries],
        "/v1/search": [{"query": q, "k": SEARCH_K} for q in queries],
    }

    # All five servers stay up, and the timed requests alternate between them in rounds, so that each sees the
    # same share of whatever else the machine is doing. Only one server is loaded at a time: Ray gets 4 logical
    # CPUs so that the Serve applications' replicas (1.35, 1.35 and 1.0 CPUs) can be placed on a 2-core machine.
    servers, procs, stats = {}, [], {}
    if "default" in chosen:  # first: its own Ray takes the longest to come up
        port = free_port()
        procs.append(start_default_server(settings, port, args.threads, f"{tmp.name}/default-server.log"))
        procs[-1].log = f"{tmp.name}/default-server.log"
        servers[(DEFAULT_SERVER, "on")] = f"http://127.0.0.1:{port}"
    if serve_apps:
        init_ray(num_cpus=max(4, os.cpu_count() or 1))
        serve_port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
    for topology, name, batching in serve_apps:
        app = f"bench-{topology}-{name}"
        serve.run(
            build_app(dataclasses.replace(settings, batching=batching, topology=topology)),
            name=app,
            route_prefix=f"/{app}",
        )
        url = (
            direct_ingress_urls(app, "127.0.0.1")[0] if args.direct_ingress else f"http://127.0.0.1:{serve_port}/{app}"
        )
        servers[(f"Ray Serve {topology}", name)] = url
        if batching:  # the encoder's batch counters: its own deployment, or the fused replica that holds it
            deployment, method = ("QueryEncoder", "info") if topology == "split" else ("FusedGateway", "encoder_info")
            stats[(f"Ray Serve {topology}", name)] = (serve.get_deployment_handle(deployment, app_name=app), method)
    for batching in (True, False):
        port = free_port()
        cmd = [sys.executable, os.path.abspath(__file__), "--plain-server", "--port", str(port)]
        cmd += ["--threads", str(args.threads), "--settings-json", json.dumps(dataclasses.asdict(settings))]
        procs.append(subprocess.Popen(cmd + (["--batching"] if batching else [])))
        servers[(PLAIN, "on" if batching else "off")] = f"http://127.0.0.1:{port}"
    waits = [procs[0] if "default" in chosen else None] + [None] * len(serve_apps) + procs[-2:]
    rows = [(s, e, c) for c in levels for e in bodies for s in servers]
    results: dict = {row: ([], 0.0, 0, 0) for row in rows}
    try:
        for url, proc in zip(servers.values(), waits):
            wait_healthy(url, SERVER_START_TIMEOUT_S, proc)
            for endpoint in bodies:
                asyncio.run(load(url, endpoint, bodies[endpoint], args.warmup, max(levels)))
        per_round = -(-args.requests // args.rounds)
        for concurrency in levels:
            for r in range(args.rounds):
                order = list(servers)[r % len(servers) :] + list(servers)[: r % len(servers)]
                for server in order:
                    for endpoint in bodies:
                        n = min(per_round, args.requests - r * per_round)
                        handle, method = stats.get(server, (None, None))
                        before = getattr(handle, method).remote().result() if handle else {}
                        got, wall = asyncio.run(load(servers[server], endpoint, bodies[endpoint], n, concurrency))
                        after = getattr(handle, method).remote().result() if handle else {}
                        done, seconds, batches, batched = results[(server, endpoint, concurrency)]
                        results[(server, endpoint, concurrency)] = (
                            done + got,
                            seconds + wall,
                            batches + after.get("batches", 0) - before.get("batches", 0),
                            batched + after.get("requests", 0) - before.get("requests", 0),
                        )
    finally:
        for proc in procs:  # the default server leads a session of its own (its Ray's processes); the rest are ours
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM) if hasattr(proc, "log") else proc.terminate()
            proc.wait(60)
        if serve_apps:
            serve.shutdown()
        tmp.cleanup()

    print(
        f"\n{args.requests} requests per row in {args.rounds} alternating rounds after {args.warmup} warm-up, "
        f"1 query per request, k={SEARCH_K}; model {settings.model} on {settings.encoder_backend}, {args.threads} "
        "threads per model, "
        f"batches of up to {settings.max_batch_size} within {settings.batch_wait_timeout_s * 1e3:g} ms; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {time.time() - started:.0f}s in all"
        + (
            f"; this process's Serve apps {'with direct ingress' if args.direct_ingress else 'behind its proxy'}"
            if serve_apps
            else ""
        )
        + (
            "; the default path as pipelines/serve.py chose it (one node: fused, direct ingress)"
            if "default" in chosen
            else ""
        )
        + "\n"
    )
    print(
        "| concurrency | endpoint | server | batching | req/s | vs plain, same batching | vs plain unbatched | "
        "p50 ms | p99 ms | mean Serve encoder batch | errors |"
    )
    print("|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    failed = 0
    summary = {row: summarize(*results[row][:2]) for row in rows}
    for server, endpoint, concurrency in rows:
        r = summary[(server, endpoint, concurrency)]
        _, _, batches, batched = results[(server, endpoint, concurrency)]
        failed += r["5xx"] + r["other_errors"]
        same = summary[((PLAIN, server[1]), endpoint, concurrency)]["rps"]
        unbatched = summary[((PLAIN, "off"), endpoint, concurrency)]["rps"]
        batch = f"{batched / batches:.2f}" if batches else "-"
        print(
            f"| {concurrency} | {endpoint} | {server[0]} | {server[1]} | {r['rps']:.1f} | {r['rps'] / same:.2f}x | "
            f"{r['rps'] / unbatched:.2f}x | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {batch} | "
            f"{r['5xx'] + r['other_errors']} |"
        )
    if failed:
        print(f"\nFAILED: {failed} requests did not answer 200", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
