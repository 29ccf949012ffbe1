import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("CROPS_PROGRESS", "0")

# Under pytest-xdist (`make test` runs two workers), each worker keeps its own crops-ray cache: two workers
# writing the same cache entry at once is not a race the tests should depend on.
if os.environ.get("PYTEST_XDIST_WORKER") and "CROPS_CACHE" not in os.environ:
    import tempfile

    os.environ["CROPS_CACHE"] = os.path.join(tempfile.gettempdir(), f"crops-test-cache-{os.environ.get('PYTEST_XDIST_TESTRUNUID', 'run')[:8]}-{os.environ['PYTEST_XDIST_WORKER']}")

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session (starting Ray costs seconds); 2 CPUs as on this machine."""
    import ray

    from crops_ray.runtime import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _worker_cache_cleanup():
    """Remove this worker's own cache folder (set above) when the session ends."""
    yield
    folder = os.environ.get("CROPS_CACHE", "")
    if os.path.basename(folder).startswith("crops-test-cache-"):
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
