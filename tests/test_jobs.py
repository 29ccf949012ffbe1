"""Every pipeline runs unchanged under `ray job submit` against a local head that this test starts and stops."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def head():
    """A `ray start --head --block` on loopback ports of its own and a short temp dir; stopped whatever happens."""
    from ray.job_submission import JobSubmissionClient

    gcs, dashboard, client, agent = _free_ports(4)
    temp = tempfile.mkdtemp(prefix="crh", dir="/tmp")  # unix socket paths must stay short
    # The head keeps idle workers as crops_ray.runtime.init_ray does for a local Ray (RAY_<setting> env vars are
    # read by the raylet): on 2 CPUs Ray's default kills every spare worker a second after each stage.
    from crops_ray.runtime import LOCAL_TRAIN_ENV, local_system_config

    keep = {f"RAY_{k}": str(v) for k, v in local_system_config(2).items()} | LOCAL_TRAIN_ENV
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", **keep}
    env.pop("RAY_ADDRESS", None)
    cmd = [
        RAY,
        "start",
        "--head",
        "--block",
        f"--port={gcs}",
        f"--dashboard-port={dashboard}",
        "--dashboard-host=127.0.0.1",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}",
        "--min-worker-port=21000",
        "--max-worker-port=21999",
        "--num-cpus=2",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
        "--include-dashboard=true",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                yield_client = JobSubmissionClient(address)
                yield_client.list_jobs()
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("the test's Ray head did not come up")
                time.sleep(2)
        yield yield_client
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # stops only the processes this head started
        try:
            proc.wait(timeout=5)  # a graceful drain takes ~30 s; nothing of this head is worth keeping
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def _runtime_env():
    with open(os.path.join(REPO, "runtime_env.yaml")) as f:
        env = yaml.safe_load(f)
    env["working_dir"] = REPO
    return env


def submit(client, args, timeout=600):
    """Submit `python pipelines/...` as a job (retrying while the head's agent starts), wait, return its logs."""
    from ray.job_submission import JobStatus

    entrypoint = " ".join([sys.executable, *args])
    started = time.time()
    deadline = time.time() + 60
    while True:
        try:
            job = client.submit_job(entrypoint=entrypoint, runtime_env=_runtime_env())
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(3)
    deadline = time.time() + timeout
    while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        if time.time() > deadline:
            client.stop_job(job)
            raise TimeoutError(f"job {args} still running after {timeout}s")
        time.sleep(2)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
    print(f"job {os.path.basename(args[0])}: {time.time() - started:.0f}s")  # shown with -s or on failure
    return logs


def test_pipeline_chain_as_jobs(head, tmp_path):
    """The tiny world's generate -> build_data (validating first) -> train -> evaluate chain, each stage a job."""
    import json

    from crops_ray.encoder import shallow_copy

    world, data, model = tmp_path / "world", tmp_path / "data", tmp_path / "crops"
    logs = submit(
        head, ["pipelines/generate_world.py", "--scale", "tiny", "--seed", "5", "--users", "40", "--out", str(world)]
    )
    assert re.search(r"\| search log rows +\|", logs)

    # Raw logs validated inside the job (OUT/validated, quarantine included), then P1 and P2 through the
    # discriminator's actor pool with the real MiniLM (P3's CPU LLM has its own tests).
    logs = submit(
        head,
        [
            "pipelines/build_data.py",
            "--logs",
            str(world),
            "--validate",
            "--out",
            str(data),
            "--sources",
            "p1,p2",
            "--eval",
            str(world / "eval"),
            "--discriminator-kind",
            "bi-encoder",  # zero-shot, calibrated on the log's own labels: the cross-encoder has its own tests
            "--no-fine-tune-discriminator",
        ],
    )
    stats = json.load(open(data / "stats.json"))
    assert stats["sources"]["reformulation"]["kept"] > 0 and stats["sources"]["recommendation"]["kept"] > 0
    assert stats["rows_read"]["search_log"] > 0 and re.search(r"\| reformulation \(P1\) +\|", logs)
    for table in ("videos", "search_log", "rec_log"):
        assert any(name.endswith(".parquet") for name in os.listdir(data / "validated" / table))

    small = shallow_copy("minilm", str(tmp_path / "minilm-1l"), num_layers=1)  # a real, shallower transformer
    logs = submit(
        head,
        [
            "pipelines/train.py",
            "--data",
            str(data),
            "--out",
            str(model),
            "--model",
            small,
            "--max-steps",
            "3",
            "--batch-size",
            "8",
            "--max-length",
            "32",
            "--doc-tower",
            "frozen",
        ],
    )
    assert re.search(r"\| final loss +\|", logs) and os.path.exists(model / "model" / "crops_encoder.json")

    logs = submit(
        head,
        [
            "pipelines/evaluate.py",
            "--logs",
            str(world),
            "--model",
            str(model / "model"),
            "--out",
            str(tmp_path / "eval"),
        ],
    )
    # The job scored the model the train job wrote, on the world's held-out eval: the same numbers as evaluating
    # that folder here, and the trained encoder is not the untrained one it started from.
    import numpy as np

    from crops_ray.encoder import Encoder
    from crops_ray.evaluate import evaluate

    metrics = json.load(open(tmp_path / "eval" / "metrics.json"))["metrics"]
    here = evaluate(str(world), str(tmp_path / "eval-here"), "dense", str(model / "model"), progress=lambda *_: None)
    for metric in ("recall@100_ct", "recall@100_qr", "ndcg@4", "mrr@10"):
        assert metrics[metric] == pytest.approx(here[metric], abs=1e-9), metric
    assert metrics["recall@100_ct"] > 0 and f"{metrics['recall@100_ct']:.4f}" in logs
    text = ["a jaguar cub by the river"]
    untrained = Encoder.from_pretrained(small).encode_queries(text)
    assert not np.allclose(Encoder.from_pretrained(str(model / "model")).encode_queries(text), untrained, atol=1e-4)
