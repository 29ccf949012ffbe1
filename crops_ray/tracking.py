"""Runs tracked in MLflow: settings as params, per-step and final numbers as metrics, reports as artifacts.

    run = start_run("runs/x", "crops seed 0", tags={"method": "crops", "seed": 0}, params={"train": asdict(cfg)})
    run.log_metrics({"loss": 1.9, "lr": 5e-5}, step=25)
    run.log_artifact("runs/x/result.json")
    run.end()

**Where.** ``MLFLOW_TRACKING_URI`` when it is set (a team's server, ``http://...``, or any store MLflow knows);
otherwise a SQLite store in the output folder, ``OUT/mlflow.db``, with the artifacts beside it in
``OUT/mlartifacts/``. SQLite, not a ``file:`` folder: MLflow 3 keeps the folder store in maintenance mode and refuses
it unless ``MLFLOW_ALLOW_FILE_STORE=true``; SQLite needs no server (SQLAlchemy and Alembic, no UI), and
``mlflow ui --backend-store-uri sqlite:///OUT/mlflow.db`` or ``mlflow.search_runs`` read it. The experiment is
``MLFLOW_EXPERIMENT_NAME`` when set, else the caller's (default :data:`EXPERIMENT`).

**Never at the cost of the work.** A store that cannot be reached or refuses a call costs a warning, once; the
run then logs nothing more and the training or the demo goes on. A server that does not answer is noticed before
the run starts (:data:`PROBE_TIMEOUT_S`) instead of after MLflow's HTTP retries.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import AbstractContextManager

EXPERIMENT = "crops-ray"
STORE_FILE = "mlflow.db"  # OUT/mlflow.db: the default store
ARTIFACTS_DIR = "mlartifacts"  # OUT/mlartifacts/: the default store's artifacts
PROBE_TIMEOUT_S = 5.0  # how long a remote tracking server gets to answer before the run goes untracked
PARAM_MAX_CHARS = 500  # a longer setting (a list of sources, a path) is cut: MLflow refuses values over 6,000
PARENT_TAG = "mlflow.parentRunId"  # the tag MLflow's UI nests runs by

log = logging.getLogger(__name__)


def tracking_uri(out: str) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the SQLite store ``out/mlflow.db`` (an absolute ``sqlite:///`` URI)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath(os.path.join(out, STORE_FILE))}"


def metric_key(name: str) -> str:
    """A metric or param name MLflow accepts: ``recall@100_ct`` -> ``recall_at_100_ct`` (MLflow allows letters,
    digits, ``_ - . / :`` and spaces)."""
    return "".join(c if c.isalnum() or c in "_-./: " else "_" for c in name.replace("@", "_at_"))


def flatten(params: dict, prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow params: ``{"train": {"lr": 5e-5}}`` -> ``{"train.lr": "5e-05"}``."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{metric_key(str(key))}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(list(value) if isinstance(value, tuple) else value)[:PARAM_MAX_CHARS]
    return flat


def numbers(metrics: dict) -> dict[str, float]:
    """The numeric entries of ``metrics`` (no booleans, no strings or nested dicts), under MLflow-safe names."""
    return {
        metric_key(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class Run(AbstractContextManager):
    """One MLflow run, or one that logs nothing: :data:`NO_RUN`, or a run whose store failed (warned once).

    Every call is safe to make from the driver's threads (an ``MlflowClient`` with an explicit run id, no
    MLflow "active run" state). ``with`` ends it, FAILED when the block raised.
    """

    def __init__(self, client=None, run_id: str | None = None, experiment_id: str | None = None, uri: str = ""):
        self._client, self.run_id, self.experiment_id, self.uri = client, run_id, experiment_id, uri

    @property
    def active(self) -> bool:
        return self._client is not None

    def _call(self, what: str, fn):
        if self._client is None:
            return None
        try:
            return fn()
        except Exception as exc:  # a store down or a refused value must never stop the work it records
            log.warning("MLflow (%s): %s failed, the run logs nothing more: %s", self.uri, what, exc)
            self._client = None
            return None

    def log_params(self, params: dict) -> None:
        """Nested settings, flattened (:func:`flatten`); MLflow refuses a param logged again with another value."""
        from mlflow.entities import Param

        flat = [Param(k, v) for k, v in flatten(params).items()]
        if flat:
            self._call("log params", lambda: self._client.log_batch(self.run_id, params=flat))

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """The numeric entries of ``metrics``; ``step`` makes them a history (a chart per metric)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step or 0) for k, v in numbers(metrics).items()]
        if batch:
            self._call("log metrics", lambda: self._client.log_batch(self.run_id, metrics=batch))

    def log_artifact(self, path: str, folder: str | None = None) -> None:
        """A file (or a folder's files) under the run's artifacts; a path that does not exist is skipped."""
        if not os.path.exists(path):
            return
        if os.path.isdir(path):
            self._call(f"log artifacts {path}", lambda: self._client.log_artifacts(self.run_id, path, folder))
        else:
            self._call(f"log artifact {path}", lambda: self._client.log_artifact(self.run_id, path, folder))

    def child(self, name: str, tags: dict | None = None, params: dict | None = None) -> Run:
        """A run nested under this one (MLflow's UI shows it inside this run), in the same experiment."""
        if self._client is None:
            return NO_RUN
        run = self._call(
            f"start run {name}",
            lambda: self._client.create_run(
                self.experiment_id, run_name=name, tags=_tags({**(tags or {}), PARENT_TAG: self.run_id})
            ),
        )
        if run is None:
            return NO_RUN
        child = Run(self._client, run.info.run_id, self.experiment_id, self.uri)
        child.log_params(params or {})
        return child

    def end(self, failed: bool = False) -> None:
        status = "FAILED" if failed else "FINISHED"
        self._call("end run", lambda: self._client.set_terminated(self.run_id, status))
        self._client = None

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end(failed=exc_type is not None)


NO_RUN = Run()  # logs nothing: what the library's functions get when nobody asked for tracking


def start_run(
    out: str,
    name: str,
    tags: dict | None = None,
    params: dict | None = None,
    experiment: str = EXPERIMENT,
) -> Run:
    """A new run in the store of :func:`tracking_uri` (``out``), experiment ``MLFLOW_EXPERIMENT_NAME`` or
    ``experiment``; :data:`NO_RUN` (with a warning) when the store cannot be reached."""
    uri = tracking_uri(out)
    probe = _unreachable(uri)
    if probe:
        log.warning("MLflow: the tracking server %s does not answer (%s); this run is not tracked", uri, probe)
        return NO_RUN
    try:
        _quiet_mlflow()
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment_id(client, uri, os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment)
        run = client.create_run(experiment_id, run_name=name, tags=_tags(tags or {}))
    except Exception as exc:  # no MLflow, a store that refuses: the work goes on untracked
        log.warning("MLflow (%s): cannot start run %s, it is not tracked: %s", uri, name, exc)
        return NO_RUN
    tracked = Run(client, run.info.run_id, experiment_id, uri)
    tracked.log_params(params or {})
    return tracked


def _experiment_id(client, uri: str, name: str) -> str:
    """The experiment's id, created when missing; a SQLite store's experiments keep their artifacts beside the
    database (MLflow's default is ``./mlruns`` under the current directory)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        database = uri[len("sqlite:///") :]
        location = "file://" + os.path.join(os.path.dirname(os.path.abspath(database)), ARTIFACTS_DIR)
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created meanwhile by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _tags(tags: dict) -> dict[str, str]:
    """``tags`` plus MLflow's own context tags (the source script, the git commit), all as strings."""
    try:
        from mlflow.tracking.context.registry import resolve_tags

        context = resolve_tags()
    except Exception:  # the context is a courtesy: a git or platform probe that fails costs nothing
        context = {}
    return {**context, **{k: str(v) for k, v in tags.items()}}


def _unreachable(uri: str) -> str | None:
    """Why an ``http(s)`` tracking server cannot be reached (None when it answers with any status, or when the
    store is not a server): checked once with a short timeout, since MLflow's own client retries for minutes."""
    if not uri.startswith(("http://", "https://")):
        return None
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S)
    except requests.RequestException as exc:
        return type(exc).__name__
    return None


def _quiet_mlflow() -> None:
    """MLflow's INFO lines (creating the database, its tables, the experiment) would interleave with the training's
    progress; keep its warnings. ``MLFLOW_LOGGING_LEVEL`` set by the user wins."""
    import mlflow  # noqa: F401  (configures its loggers on import; then they are set here)

    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
