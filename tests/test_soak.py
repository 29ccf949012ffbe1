"""bench/soak.py: a short soak of the Serve application (mixed load, a replica killed midway, the admission bound driven
past) keeps Serve's promises; and the soak's own checks fail a run that breaks them (a 500, a plain-text error, a 503
without Retry-After, no recovery, memory that grows)."""

import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOAK = os.path.join(ROOT, "bench", "soak.py")
# Loaded from its file: putting bench/ on sys.path would shadow the serve/ package with bench/serve.py. Registered
# in sys.modules before it runs, as dataclasses look their module up there.
_spec = importlib.util.spec_from_file_location("bench_soak", SOAK)
soak = importlib.util.module_from_spec(_spec)
sys.modules["bench_soak"] = soak
_spec.loader.exec_module(soak)

SHORT = {"duration": 30, "kill_at": 6, "concurrency": 64, "max_in_flight": 16}  # ~60-90 s in all on 2 cores
RUN_TIMEOUT_S = 300  # the whole subprocess: a hang fails the test instead of the session

CAPACITY_503 = "the service is at capacity (16 requests in progress on this replica); retry shortly"
REPLICA_503 = "a model replica failed or is restarting; retry shortly"


# ------------------------------------------------------------------------------- the checks, on made-up runs


def _record(sent, endpoint="encode", status=200, error="", json_error=None, retry_after=None, latency=0.1):
    json_error = status >= 400 if json_error is None else json_error
    return soak.Record(sent, sent + latency, endpoint, status, json_error, retry_after, error)


def _healthy_run() -> list:
    """Every endpoint answering before and after a kill at t=10 s, capacity 503s throughout, one dead-replica 503."""
    records = []
    for t in range(20):
        for endpoint in soak.ENDPOINTS:
            records.append(_record(t + 0.5, endpoint))
        records.append(_record(t + 0.2, "score", 503, CAPACITY_503, retry_after="1", latency=0.01))
    records.append(_record(9.9, "encode", 503, REPLICA_503, retry_after="1", latency=0.2))
    return records


def _memory(total_mb: float) -> dict:
    return {"total_mb": total_mb, "by_title": {"ray::ServeReplica:crops:QueryEncoder": {"processes": 1, "rss_mb": 1}}}


def _check(records, kill_pids=(123,), health=200, memory_end_mb=2100.0) -> list[str]:
    args = soak.parse_args(["--duration", "20", "--kill-at", "10"])
    run = SimpleNamespace(records=records, kill={"at_s": 10.0, "deployment": "QueryEncoder", "pids": list(kill_pids)})
    run.memory_series = []
    memory = {"start": _memory(2000.0), "end": _memory(memory_end_mb)}
    summary = soak.summarize(run, memory, health, {}, started=0.0)
    return soak.violations(summary, args)


def test_a_run_that_keeps_the_promises_passes():
    records = _healthy_run()
    assert _check(records) == []
    after = soak.after_kill(records, 10.0)
    assert after["errors_after_kill"] == 1 and after["first_error_after_kill_s"] == pytest.approx(0.1)
    assert after["recovery_s"] == pytest.approx(0.6) and after["longest_without_200_after_kill_s"]["all"] < 1.5
    assert [soak.classify(r) for r in records[-2:]] == ["capacity", "replica"]


@pytest.mark.parametrize(
    "bad, expected",
    [
        (_record(12.0, "score", 500, "internal error (KeyError)", json_error=True), "5xx other than 503"),
        (_record(12.0, "score", 500, "Internal Server Error", json_error=False), "without a JSON body"),
        (_record(12.0, "encode", 503, "Service Unavailable", json_error=False, retry_after="1"), "without a JSON body"),
        (_record(12.0, "encode", 503, REPLICA_503), "without Retry-After"),
        (_record(12.0, "search", 599, "no answer: TimeoutError()", json_error=False), "599: no answer"),
        (_record(12.0, "search", 422, "invalid request: k: ...", json_error=True), "valid requests refused"),
    ],
    ids=["json-500", "plain-text-500", "plain-text-503", "503-without-retry-after", "no-answer", "422"],
)
def test_each_broken_promise_fails_the_run(bad, expected):
    problems = _check([*_healthy_run(), bad])
    assert any(expected in p for p in problems), problems


def test_no_recovery_no_kill_unhealthy_or_growing_memory_fail_the_run():
    no_encoder_after_kill = [r for r in _healthy_run() if r.endpoint != "encode" or r.sent < 10]
    assert any("answered 200 within" in p for p in _check(no_encoder_after_kill))
    assert any("replica of this run was found" in p for p in _check(_healthy_run(), kill_pids=()))
    assert any("/healthz answered 503" in p for p in _check(_healthy_run(), health=503))
    assert any("grew from 2000 MB to 2600 MB" in p for p in _check(_healthy_run(), memory_end_mb=2600.0))
    assert _check(_healthy_run(), memory_end_mb=2250.0) == []  # +250 MB: under the 300 MB bound


def test_process_titles_group_ray_workers_by_what_they_are():
    assert soak.process_title(["ray::ServeController.listen_for_change"]) == "ray::ServeController"
    assert soak.process_title(["ray::ServeReplica:crops:Gateway.handle_request_with_rejection"]) == (
        "ray::ServeReplica:crops:Gateway"
    )
    assert soak.process_title(["/venv/bin/python", "-u", "/venv/lib/ray/_private/log_monitor.py"]) == "log_monitor.py"
    assert soak.process_title(["/venv/lib/ray/core/src/ray/raylet/raylet", "--flag"]) == "raylet"


def test_a_polite_client_waits_what_retry_after_says_within_bounds():
    assert soak.retry_after_s("1") == 1.0 and soak.retry_after_s(None) == 1.0 and soak.retry_after_s("3600") == 5.0
    assert soak.retry_after_s("Wed, 21 Oct 2026 07:28:00 GMT") == 1.0  # a date: wait the default


# ------------------------------------------------------------------------------- the soak, short, for real


@pytest.mark.ray
@pytest.mark.slow
def test_a_short_soak_keeps_serves_promises_through_a_replica_kill_and_overload(tmp_path):
    """bench/soak.py for 30 s (its own local Ray): 64 clients over a gateway that admits 16, the query encoder's
    replica killed at 6 s. Every error is JSON, the only 5xx is 503 with Retry-After, the bound was driven past,
    and every endpoint answers 200 again after the kill."""
    out = tmp_path / "soak.json"
    cmd = [sys.executable, SOAK, "--out", str(out), "--memory-every", "5"]
    for key, value in SHORT.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=ROOT)
    log = (done.stdout + done.stderr)[-6000:]
    assert out.exists(), log
    s = json.loads(out.read_text())
    assert done.returncode == 0 and s["violations"] == [], log

    everything = next(row for row in s["endpoints"] if row["endpoint"] == "all")
    assert s["requests_answered"] > 300 and everything["200"] > 100, log
    assert set(s["status_counts"]) <= {"200", "503", "408"}, s["status_counts"]
    assert s["errors_not_json"] == 0 and s["503_without_retry_after"] == 0
    assert everything["503 capacity"] > 0, "64 clients never drove the gateway past its 16 admitted requests"
    assert s["kill"]["pids"] and s["kill"]["at_s"] == pytest.approx(SHORT["kill_at"], abs=1.0)
    after = s["after_kill"]
    assert all(v is not None for v in after["first_200_after_kill_s"].values()), after
    assert after["recovery_s"] <= s["settings"]["recovery_bound_s"]
    assert {"ray::ServeReplica:crops:QueryEncoder", "ray::ProxyActor", "ray::ServeController"} <= set(
        s["memory"]["end"]["by_title"]
    )
    assert s["memory"]["start"]["total_mb"] > 0 and s["memory"]["series"]
