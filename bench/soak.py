"""Soak: a sustained mixed load on the Serve application on 127.0.0.1, with a replica killed midway and the gateway's
admission bound driven past, checked against the promises of serve/README.md.

    .venv/bin/python bench/soak.py [--duration 300] [--kill-at 150] [--concurrency 64] [--max-in-flight 16] \
        [--out runs/soak.json] [--model M --index I --calibration C]

Starts a local Ray and the application (split topology by default) over a small real model: without --model, a
2-layer copy of the packaged MiniLM, an index of 400 tiny-world videos and a calibration fitted on the world's
labelled pairs, built into a temporary folder. Then --concurrency aiohttp clients in this process send encode,
score and search requests (about a third each, one or two items, k=10) for --duration seconds; at --kill-at the
query encoder's replica process is killed with SIGKILL, from outside, as a crash would. ``max_in_flight`` is set
low (--max-in-flight) so the clients outnumber the gateway's admission bound and its 503s appear throughout. A client
that gets a 503 waits its Retry-After (as a polite client does; --ignore-retry-after hammers instead).

Prints a markdown table with a row per endpoint (requests, each status class, p50/p99 latency of the 200s: all,
answered before the kill, sent after it), the status codes seen, what the kill did (the window of non-capacity errors
after it, when each endpoint answered 200 again, the longest stretch with no 200), and a table of the resident memory
of every process of this run's Ray (replicas, proxy, controller, Ray's own) after the warm-up and at the end; --out
writes it all as JSON, with a per-second timeline and RSS every --memory-every seconds. --topology fused kills the
FusedGateway replica instead (--kill-deployment names another). Exit 1 when a goal is missed:

- a 5xx other than 503, or no answer at all (a client timeout or a dropped connection counts as 599);
- a 503 without Retry-After, or any error whose body is not JSON with an ``error`` field;
- a valid request refused with a 4xx other than 408 (every request this load sends is valid);
- some endpoint not answering 200, to a request sent after the kill, within --recovery-s (60) of the kill;
- /healthz not 200 at the end;
- the summed RSS of the run's Ray processes grows from start to end by more than --max-memory-growth-mb (300 MB)
  AND more than --max-memory-growth-pct (20%) (a killed replica's successor and Ray's idle workers come and go, so
  a few hundred MB of churn is not a leak; a leak of a few KB per request over minutes is both).

Capacity 503s (the Guard's "at capacity", or a model deployment's full queue) and the replica's death ("replica
failed") are told apart by their ``error`` message. Timings come from whatever machine runs it: on a shared 2-core
machine the clients, the proxy and four replicas share the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # before bench/: serve/ is a package

DEFAULT_DURATION_S = 300
DEFAULT_CONCURRENCY = 64
DEFAULT_MAX_IN_FLIGHT = 16
DEFAULT_RECOVERY_S = 60.0
DEFAULT_MEMORY_GROWTH_MB = 300.0
DEFAULT_MEMORY_GROWTH_PCT = 20.0
DEFAULT_MEMORY_EVERY_S = 10.0
DEFAULT_SEED = 0
WARMUP_OKS = 3  # 200s per endpoint before the clock starts
SEARCH_K = 10
INDEXED_VIDEOS = 400
SHALLOW_LAYERS = 2
WORLD_SEED = 1
CALIBRATION_PAIRS = 100  # per side (fit, held out): enough for a calibration the soak does not measure
CLIENT_TIMEOUT_S = 60.0  # longer than the gateway's 30 s deadline and the proxy's 35 s: a missing answer is a failure
START_TIMEOUT_S = 300.0
RETRY_AFTER_CAP_S = 5.0
NO_ANSWER = 599  # what a client timeout or a dropped connection is recorded as
PROXY_GRACE_S = 5.0  # the proxy's deadline past the app's, as pipelines/serve.py sets it
ENDPOINTS = ("encode", "score", "search")
CAPACITY, REPLICA = "at capacity", "replica failed"  # the two 503 messages serve/guard.py and serve/api.py give


# ------------------------------------------------------------------------------------------- the application


def build_assets(folder: str) -> dict:
    """A 2-layer MiniLM, an index of its document embeddings of tiny-world videos and a bi-encoder calibration fitted
    on the world's labelled pairs (the recipe of tests/test_serve.py): the paths, as ServeSettings fields."""
    import pyarrow.parquet as pq

    from crops_ray.discriminator import Discriminator, DiscriminatorConfig, fit_calibration
    from crops_ray.encoder import Encoder, doc_tower_fingerprint, shallow_copy
    from crops_ray.index import VectorIndex
    from crops_ray.schema import table_files
    from crops_ray.world.generator import generate_world, world_config
    from crops_ray.world.labelled_pairs import world_labelled_pairs

    world = f"{folder}/world"
    generate_world(world, world_config("tiny", seed=WORLD_SEED), progress=lambda *_: None)
    model = shallow_copy("minilm", f"{folder}/minilm-{SHALLOW_LAYERS}l", SHALLOW_LAYERS)
    videos = pq.read_table(table_files(world, "videos"), columns=["video_id", "text"]).slice(0, INDEXED_VIDEOS)
    texts = videos["text"].to_pylist()
    index = VectorIndex.build(videos["video_id"].to_pylist(), Encoder.from_pretrained(model).encode_docs(texts))
    index.meta = {"encoder": doc_tower_fingerprint(model, []), "model": model}  # as evaluation records it
    index.save(f"{folder}/index")
    cfg = DiscriminatorConfig(model=model, kind="bi-encoder")
    fit = world_labelled_pairs(world, CALIBRATION_PAIRS, heldout=False, seed=WORLD_SEED)
    held = world_labelled_pairs(world, CALIBRATION_PAIRS, heldout=True, seed=WORLD_SEED)
    fit_calibration(Discriminator(cfg), fit, held, "soak", alpha=0.6).save(f"{folder}/calibration.json")
    return {
        "model": model,
        "index": f"{folder}/index",
        "discriminator_model": model,
        "calibration": f"{folder}/calibration.json",
    }


def request_texts(folder: str) -> tuple[list[str], list[str]]:
    """Queries and video titles of the tiny world, the request bodies' texts (the world is generated if missing)."""
    import pyarrow.parquet as pq

    from crops_ray.schema import table_files
    from crops_ray.world.generator import generate_world, world_config

    world = f"{folder}/world"
    if not os.path.isdir(world):
        generate_world(world, world_config("tiny", seed=WORLD_SEED), progress=lambda *_: None)
    queries = pq.read_table(f"{world}/eval/queries.parquet")["query"].to_pylist()
    return queries, pq.read_table(table_files(world, "videos"), columns=["text"])["text"].to_pylist()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(settings, port: int) -> str:
    """A local Ray, Serve's proxy on 127.0.0.1:port (its deadline past the app's) and the application at /."""
    from ray import serve

    from crops_ray.runtime import init_ray
    from serve.app import APP_NAME, build_app

    os.environ.pop("RAY_ADDRESS", None)  # this run's own Ray: its processes are this process's descendants
    init_ray(num_cpus=os.cpu_count() or 2)
    serve.start(
        http_options={
            "host": "127.0.0.1",
            "port": port,
            "request_timeout_s": settings.request_timeout_s + PROXY_GRACE_S,
        }
    )
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    return f"http://127.0.0.1:{port}"


# ------------------------------------------------------------------------------------------- processes


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def replica_pids(app: str, deployment: str) -> list[int]:
    """PIDs of a deployment's replicas in this run's own Ray (descendants of this process), from their titles."""
    me, found = os.getpid(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode(errors="replace")
            if f"ServeReplica:{app}:{deployment}" not in title:
                continue
            p = int(pid)
            while p > 1:
                p = _parent(p)
                if p == me:
                    found.append(int(pid))
                    break
        except (OSError, ValueError, IndexError):
            continue
    return found


def process_title(cmdline: list[str]) -> str:
    """A Ray worker's title (``ray::ServeReplica:crops:Gateway``, ``ray::IDLE``), else the program or script name."""
    if not cmdline:
        return "?"
    if cmdline[0].startswith("ray::"):  # without the method it runs now (ray::ServeController.listen_for_change)
        return cmdline[0].split(" ")[0].split(".")[0]
    script = next((a for a in cmdline[1:] if a.endswith(".py")), None)
    return os.path.basename(script or cmdline[0].split(" ")[0])


def ray_memory() -> dict:
    """Resident memory (MB) of this run's Ray processes (this process's descendants), summed and per title."""
    import psutil

    by_title: dict[str, dict] = defaultdict(lambda: {"processes": 0, "rss_mb": 0.0})
    for p in psutil.Process().children(recursive=True):
        try:
            rss, title = p.memory_info().rss / 2**20, process_title(p.cmdline())
        except psutil.Error:  # gone between the listing and the read
            continue
        by_title[title]["processes"] += 1
        by_title[title]["rss_mb"] += rss
    rounded = {t: {**v, "rss_mb": round(v["rss_mb"], 1)} for t, v in sorted(by_title.items())}
    return {"total_mb": round(sum(v["rss_mb"] for v in by_title.values()), 1), "by_title": rounded}


# ------------------------------------------------------------------------------------------- the load


@dataclass(slots=True)
class Record:
    """One request: sent and answered (seconds since the load started), what came back."""

    sent: float
    done: float
    endpoint: str
    status: int
    json_error: bool  # status >= 400: the body parsed as JSON with a string "error"
    retry_after: str | None
    error: str  # the error message (or the start of a non-JSON body), cut short

    @property
    def latency(self) -> float:
        return self.done - self.sent


def classify(r: Record) -> str:
    """ok, capacity (a 503 of the admission bound or a full queue), replica (a 503 of a dead replica), or other."""
    if r.status == 200:
        return "ok"
    if r.status == 503 and CAPACITY in r.error:
        return "capacity"
    if r.status == 503 and REPLICA in r.error:
        return "replica"
    return "other"


class Bodies:
    """Small valid request bodies for each endpoint: one or two queries, pairs or a query with k=10."""

    def __init__(self, queries: list[str], titles: list[str], seed: int):
        self.queries, self.titles, self.rng = queries, titles, random.Random(seed)

    def next(self) -> tuple[str, dict]:
        endpoint, n = self.rng.choice(ENDPOINTS), self.rng.randint(1, 2)
        qs = self.rng.sample(self.queries, n)
        if endpoint == "encode":
            return endpoint, {"queries": qs}
        if endpoint == "score":
            return endpoint, {"pairs": [{"query": q, "text": self.rng.choice(self.titles)} for q in qs]}
        return endpoint, {"query": qs[0], "k": SEARCH_K}


async def send(session, url: str, endpoint: str, body: dict, t0: float) -> Record:
    """One POST, recorded; no answer (timeout, reset) is a 599."""
    import aiohttp

    sent = time.monotonic() - t0
    try:
        async with session.post(f"{url}/v1/{endpoint}", json=body) as r:
            raw = await r.read()
            status, retry_after = r.status, r.headers.get("Retry-After")
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return Record(sent, time.monotonic() - t0, endpoint, NO_ANSWER, False, None, f"no answer: {exc!r}"[:200])
    done, json_error, error = time.monotonic() - t0, False, ""
    if status >= 400:
        error = raw[:200].decode(errors="replace")
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            json_error, error = True, payload["error"]
    return Record(sent, done, endpoint, status, json_error, retry_after, error[:200])


def retry_after_s(header: str | None) -> float:
    """How long a polite client waits after a 503: its Retry-After in seconds (1 when absent or a date), capped."""
    try:
        return min(max(float(header or 1), 0.0), RETRY_AFTER_CAP_S)
    except ValueError:
        return 1.0


@dataclass
class Soak:
    """The load's state: where, how hard, what came back, when the replica was killed and what memory did."""

    url: str
    bodies: Bodies
    concurrency: int
    duration_s: float
    kill_at_s: float | None
    kill_target: tuple[str, str]  # (application, deployment)
    honour_retry_after: bool
    memory_every_s: float
    records: list[Record] = field(default_factory=list)
    kill: dict = field(default_factory=dict)
    memory_series: list[dict] = field(default_factory=list)
    t0: float = 0.0  # time.monotonic() when the load started

    async def run(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self.t0 = time.monotonic()
            background = [asyncio.create_task(self._watch_memory())]
            if self.kill_at_s is not None:
                background.append(asyncio.create_task(self._kill()))
            await asyncio.gather(*(self._client(session) for _ in range(self.concurrency)))
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

    async def _client(self, session) -> None:
        while time.monotonic() - self.t0 < self.duration_s:
            endpoint, body = self.bodies.next()
            r = await send(session, self.url, endpoint, body, self.t0)
            self.records.append(r)
            if r.status == 503 and self.honour_retry_after:
                await asyncio.sleep(retry_after_s(r.retry_after))

    async def _kill(self) -> None:
        await asyncio.sleep(max(0.0, self.t0 + self.kill_at_s - time.monotonic()))
        pids = await asyncio.to_thread(replica_pids, *self.kill_target)
        at = time.monotonic() - self.t0
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it died on its own between the listing and the kill
                continue
        self.kill = {"at_s": round(at, 3), "deployment": self.kill_target[1], "pids": pids}
        print(f"t={at:.1f}s: killed {self.kill_target[1]} replica(s) {pids} with SIGKILL", flush=True)

    async def _watch_memory(self) -> None:
        while True:
            await asyncio.sleep(self.memory_every_s)
            snapshot = await asyncio.to_thread(ray_memory)
            self.memory_series.append({"t_s": round(time.monotonic() - self.t0, 1), "total_mb": snapshot["total_mb"]})


async def warm_up(url: str, bodies: Bodies) -> None:
    """/healthz 200, then WARMUP_OKS 200s on every endpoint (models loaded, batches compiled, connections open)."""
    import aiohttp

    deadline = time.monotonic() + START_TIMEOUT_S
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)) as session:
        oks: Counter = Counter()
        while min(oks[e] for e in ENDPOINTS) < WARMUP_OKS:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {WARMUP_OKS} 200s on every endpoint within {START_TIMEOUT_S:.0f} s: {oks}")
            endpoint, body = bodies.next()
            r = await send(session, url, endpoint, body, 0.0)
            oks[endpoint] += r.status == 200
            if r.status != 200:
                await asyncio.sleep(0.5)


async def final_health(url: str, tries: int = 10) -> int:
    """/healthz's status after the load (a few tries: a deployment may still be settling)."""
    import aiohttp

    status = NO_ANSWER
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)) as session:
        for _ in range(tries):
            try:
                async with session.get(f"{url}/healthz") as r:
                    status = r.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = NO_ANSWER
            if status == 200:
                break
            await asyncio.sleep(2)
    return status


# ------------------------------------------------------------------------------------------- the report


def percentiles_ms(records: list[Record]) -> dict:
    import numpy as np

    if not records:
        return {"p50_ms": None, "p99_ms": None}
    latencies = np.array([r.latency for r in records]) * 1e3
    return {
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
    }


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch of [start, end] with none of ``times`` in it."""
    edges = [start, *sorted(t for t in times if start <= t <= end), end]
    return max(b - a for a, b in zip(edges, edges[1:]))


def after_kill(records: list[Record], kill_s: float | None) -> dict:
    """What the kill did: the error window (non-capacity errors answered after it, in seconds after it), per endpoint
    when the first 200 to a request sent after it came back (the slowest endpoint is the recovery), and the longest
    stretch after it with no 200 at all (waiting requests hold the admission slots, so other endpoints stall too)."""
    if kill_s is None:
        return {}
    errors = sorted(r.done - kill_s for r in records if r.done >= kill_s and classify(r) in ("replica", "other"))
    end = max(r.done for r in records)
    first_ok, gaps = {}, {}
    for e in (*ENDPOINTS, "all"):
        mine = [r for r in records if e in ("all", r.endpoint) and r.status == 200]
        gaps[e] = round(longest_gap([r.done for r in mine], kill_s, end), 2)
        if e != "all":
            oks = [r.done - kill_s for r in mine if r.sent >= kill_s]
            first_ok[e] = round(min(oks), 2) if oks else None
    served = list(first_ok.values())
    return {
        "errors_after_kill": len(errors),
        "first_error_after_kill_s": round(errors[0], 2) if errors else None,
        "last_error_after_kill_s": round(errors[-1], 2) if errors else None,
        "first_200_after_kill_s": first_ok,
        "recovery_s": None if None in served else max(served),
        "longest_without_200_after_kill_s": gaps,
    }


def endpoint_rows(records: list[Record], kill_s: float | None) -> list[dict]:
    """One row per endpoint and one for all: counts per class, latency of the 200s overall, answered before the kill
    and sent after it (the requests in flight at the kill, which waited for the new replica, count in neither)."""
    rows = []
    for name in (*ENDPOINTS, "all"):
        mine = [r for r in records if name in ("all", r.endpoint)]
        classes = Counter(classify(r) for r in mine)
        ok = [r for r in mine if r.status == 200]
        row = {"endpoint": name, "requests": len(mine), "200": classes["ok"], "503 capacity": classes["capacity"]}
        row.update({"503 replica failed": classes["replica"], "other errors": classes["other"]})
        row.update({f"200 {k}": v for k, v in percentiles_ms(ok).items()})
        if kill_s is not None:
            before, after = [r for r in ok if r.done < kill_s], [r for r in ok if r.sent >= kill_s]
            row.update({f"before kill {k}": v for k, v in percentiles_ms(before).items()})
            row.update({f"after kill {k}": v for k, v in percentiles_ms(after).items()})
        rows.append(row)
    return rows


def timeline(records: list[Record]) -> list[dict]:
    """Answers per second of the load, by class: where the errors sat and when the 200s came back."""
    seconds: dict[int, Counter] = defaultdict(Counter)
    for r in records:
        seconds[int(r.done)][classify(r)] += 1
    return [{"t_s": t, **{c: seconds[t][c] for c in ("ok", "capacity", "replica", "other")}} for t in sorted(seconds)]


def violations(summary: dict, args) -> list[str]:
    """The goals this run missed, one line each, in the order of the module's docstring (an empty list: all met)."""
    out, codes, bad = [], summary["status_counts"], summary["bad_examples"]
    server = {c: n for c, n in codes.items() if int(c) >= 500 and int(c) != 503}
    if server:
        out.append(f"5xx other than 503 (599: no answer): {server}; e.g. {bad.get('5xx')}")
    if summary["503_without_retry_after"]:
        out.append(f"{summary['503_without_retry_after']} 503s without Retry-After; e.g. {bad.get('no_retry_after')}")
    if summary["errors_not_json"]:
        out.append(f"{summary['errors_not_json']} errors without a JSON body with 'error'; e.g. {bad.get('not_json')}")
    refused = {c: n for c, n in codes.items() if 400 <= int(c) < 500 and int(c) != 408}
    if refused:
        out.append(f"valid requests refused: {refused}; e.g. {bad.get('4xx')}")
    kill = summary["kill"]
    if args.kill_at is not None:
        if not kill.get("pids"):
            out.append(f"no {args.kill_deployment} replica of this run was found to kill")
        recovery = summary["after_kill"].get("recovery_s")
        if kill.get("pids") and (recovery is None or recovery > args.recovery_s):
            out.append(
                f"not every endpoint answered 200 within {args.recovery_s:g} s of the kill: "
                f"{summary['after_kill'].get('first_200_after_kill_s')}"
            )
    if summary["healthz_at_end"] != 200:
        out.append(f"/healthz answered {summary['healthz_at_end']} at the end")
    start, end = summary["memory"]["start"]["total_mb"], summary["memory"]["end"]["total_mb"]
    growth = end - start
    if growth > args.max_memory_growth_mb and growth > start * args.max_memory_growth_pct / 100:
        out.append(
            f"Ray's processes grew from {start:.0f} MB to {end:.0f} MB (+{growth:.0f} MB, more than "
            f"{args.max_memory_growth_mb:g} MB and {args.max_memory_growth_pct:g}%)"
        )
    return out


def summarize(soak: Soak, memory: dict, health: int, settings: dict, started: float) -> dict:
    records, kill_s = soak.records, soak.kill.get("at_s")
    bad: dict[str, str] = {}
    for r in records:  # the first example of each kind of failure, as evidence
        example = f"{r.endpoint} {r.status} at t={r.done:.1f}s: {r.error[:160]!r}"
        if r.status >= 500 and r.status != 503:
            bad.setdefault("5xx", example)
        if r.status == 503 and not r.retry_after:
            bad.setdefault("no_retry_after", example)
        if r.status >= 400 and not r.json_error:
            bad.setdefault("not_json", example)
        if 400 <= r.status < 500 and r.status != 408:
            bad.setdefault("4xx", example)
    load_s = max((r.done for r in records), default=0.0)
    return {
        "settings": settings,
        "requests_answered": sum(r.status != NO_ANSWER for r in records),
        "requests_sent": len(records),
        "load_s": round(load_s, 1),
        "requests_per_s": round(len(records) / load_s, 1) if load_s else 0.0,
        "status_counts": {str(c): n for c, n in sorted(Counter(r.status for r in records).items())},
        "503_without_retry_after": sum(r.status == 503 and not r.retry_after for r in records),
        "errors_not_json": sum(r.status >= 400 and not r.json_error for r in records),
        "error_messages": dict(Counter(r.error[:100] for r in records if r.status >= 400).most_common(10)),
        "bad_examples": bad,
        "endpoints": endpoint_rows(records, kill_s),
        "kill": soak.kill,
        "kill_at_s": kill_s,
        "after_kill": after_kill(records, kill_s),
        "healthz_at_end": health,
        "memory": {**memory, "series": soak.memory_series},
        "timeline": timeline(records),
        "cpus": os.cpu_count(),
        "load_average_end": round(os.getloadavg()[0], 2),
        "wall_s": round(time.time() - started, 1),
    }


def memory_rows(memory: dict) -> list[dict]:
    """Per process title: how many processes and their RSS after the warm-up and at the end; then the sum."""
    start, end = memory["start"]["by_title"], memory["end"]["by_title"]
    none = {"processes": 0, "rss_mb": 0.0}
    rows = [
        {
            "process": title,
            "processes start/end": f"{start.get(title, none)['processes']}/{end.get(title, none)['processes']}",
            "RSS start MB": start.get(title, none)["rss_mb"],
            "RSS end MB": end.get(title, none)["rss_mb"],
        }
        for title in sorted(set(start) | set(end))
    ]
    total = {"RSS start MB": memory["start"]["total_mb"], "RSS end MB": memory["end"]["total_mb"]}
    return [*rows, {"process": "all of this run's Ray", "processes start/end": "", **total}]


def report(summary: dict) -> str:
    """The printed report: one line of settings, the table per endpoint, the kill, the status codes, the memory."""
    import pandas as pd

    s, a, m = summary["settings"], summary["after_kill"], summary["memory"]
    lines = [
        f"\n{summary['requests_answered']} requests answered in {summary['load_s']:.0f} s "
        f"({summary['requests_per_s']:.1f}/s) at concurrency {s['concurrency']}, max_in_flight {s['max_in_flight']}, "
        f"topology {s['topology']}, encoder {s['encoder_backend']}, Retry-After "
        f"{'honoured' if s['honour_retry_after'] else 'ignored'}; load average {summary['load_average_end']:.1f} on "
        f"{summary['cpus']} CPUs; {summary['wall_s']:.0f} s in all\n",
        pd.DataFrame(summary["endpoints"]).to_markdown(index=False),
        f"\nstatus codes: {summary['status_counts']}",
    ]
    if summary["kill"]:
        k = summary["kill"]
        lines.append(
            f"kill: {k['deployment']} {k['pids']} at t={k['at_s']:.1f} s; errors after it (not capacity): "
            f"{a['errors_after_kill']}, answered {a['first_error_after_kill_s']} to {a['last_error_after_kill_s']} s "
            f"after the kill; first 200 to a request sent after the kill, per endpoint: {a['first_200_after_kill_s']} "
            f"s (served again after {a['recovery_s']} s); longest stretch with no 200 after the kill: "
            f"{a['longest_without_200_after_kill_s']} s"
        )
    lines.append("\nresident memory of this run's Ray processes, after the warm-up and at the end:\n")
    lines.append(pd.DataFrame(memory_rows(m)).to_markdown(index=False))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- the run


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds of load")
    p.add_argument("--kill-at", type=float, help="seconds into the load to kill the replica (default: midway)")
    p.add_argument("--no-kill", action="store_true", help="no replica killed")
    p.add_argument("--kill-deployment", help="whose replica dies (default: QueryEncoder; FusedGateway when fused)")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="clients, each one request at a time")
    p.add_argument("--max-in-flight", type=int, default=DEFAULT_MAX_IN_FLIGHT, help="the gateway's admission bound")
    p.add_argument("--topology", choices=("split", "fused"), default="split")
    p.add_argument("--encoder-backend", help="the query encoder's runtime (default: Serve's default)")
    p.add_argument("--ignore-retry-after", action="store_true", help="clients resend at once after a 503")
    p.add_argument("--model", help="an encoder folder (default: a 2-layer MiniLM built into a temporary folder)")
    p.add_argument("--index", help="an index folder for --model (with --model)")
    p.add_argument("--calibration", help="the gate's calibration JSON (with --model)")
    p.add_argument("--recovery-s", type=float, default=DEFAULT_RECOVERY_S, help="bound on the recovery after the kill")
    p.add_argument("--max-memory-growth-mb", type=float, default=DEFAULT_MEMORY_GROWTH_MB)
    p.add_argument("--max-memory-growth-pct", type=float, default=DEFAULT_MEMORY_GROWTH_PCT)
    p.add_argument("--memory-every", type=float, default=DEFAULT_MEMORY_EVERY_S, help="seconds between RSS samples")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--out", help="write the summary (and a per-second timeline) as JSON here")
    args = p.parse_args(argv)
    if bool(args.model) != bool(args.index and args.calibration):
        p.error("--model, --index and --calibration go together")
    if args.kill_at is None and not args.no_kill:
        args.kill_at = args.duration / 2
    if args.no_kill:
        args.kill_at = None
    if args.kill_at is not None and not 0 <= args.kill_at < args.duration:
        p.error(f"--kill-at must fall within the load's {args.duration:g} s")
    args.kill_deployment = args.kill_deployment or ("FusedGateway" if args.topology == "fused" else "QueryEncoder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM"):
        os.environ.setdefault(key, "false" if key == "TOKENIZERS_PARALLELISM" else "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from serve.app import APP_NAME, resolve_settings

    started = time.time()
    tmp = tempfile.TemporaryDirectory(prefix="crops-soak-")
    try:
        if args.model:
            paths = {"model": args.model, "index": args.index, "calibration": args.calibration}
        else:
            print("building a 2-layer MiniLM, an index of 400 tiny-world videos and a calibration", flush=True)
            paths = build_assets(tmp.name)
        backend = {"encoder_backend": args.encoder_backend} if args.encoder_backend else {}
        settings = resolve_settings(
            {**paths, "max_in_flight": args.max_in_flight, "topology": args.topology, **backend}
        )
        bodies = Bodies(*request_texts(tmp.name), seed=args.seed)
        return run(args, settings, bodies, APP_NAME, started)
    finally:
        tmp.cleanup()


def run(args, settings, bodies: Bodies, app: str, started: float) -> int:
    """Start Ray and the app, warm up, load (and kill), measure, stop everything; print and write the report."""
    import ray
    from ray import serve

    try:
        url = start_app(settings, free_port())
        print(f"serving at {url}; warming up", flush=True)
        asyncio.run(warm_up(url, bodies))
        memory_start = ray_memory()
        soak = Soak(
            url=url,
            bodies=bodies,
            concurrency=args.concurrency,
            duration_s=args.duration,
            kill_at_s=args.kill_at,
            kill_target=(app, args.kill_deployment),
            honour_retry_after=not args.ignore_retry_after,
            memory_every_s=args.memory_every,
        )
        print(f"load: {args.concurrency} clients for {args.duration:g} s (kill at {args.kill_at} s)", flush=True)
        asyncio.run(soak.run())
        health = asyncio.run(final_health(url))
        memory = {"start": memory_start, "end": ray_memory()}
    finally:
        serve.shutdown()
        ray.shutdown()
    used = {
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "kill_at_s": args.kill_at,
        "kill_deployment": args.kill_deployment,
        "max_in_flight": settings.max_in_flight,
        "request_timeout_s": settings.request_timeout_s,
        "topology": settings.topology,
        "encoder_backend": settings.encoder_backend,
        "model": settings.model,
        "honour_retry_after": not args.ignore_retry_after,
        "recovery_bound_s": args.recovery_s,
        "memory_growth_bound": f"+{args.max_memory_growth_mb:g} MB and +{args.max_memory_growth_pct:g}%",
    }
    summary = summarize(soak, memory, health, used, started)
    summary["violations"] = violations(summary, args)
    print(report(summary))
    for v in summary["violations"]:
        print(f"FAILED: {v}", file=sys.stderr)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
