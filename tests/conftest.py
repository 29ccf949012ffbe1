import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("CROPS_PROGRESS", "0")

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


@pytest.fixture(scope="session")
def tiny_engine(tmp_path_factory, ray_local):
    """The tiny world, validated by build_data itself (--validate), through every perspective once: (root, stats,
    samples), with the world in root/world and the output in root/out. Shared by the engine's tests and the alpha
    sweep's). The engine's default gate: a cross-encoder trained and calibrated on the tiny log's own labels."""
    import pyarrow.parquet as pq

    from crops_ray.discriminator import DiscriminatorConfig
    from crops_ray.engine.build import EngineConfig, build_data
    from crops_ray.engine.world_knowledge import WorldKnowledgeConfig
    from crops_ray.world.generator import generate_world, world_config

    cfg = EngineConfig(
        discriminator=DiscriminatorConfig(),
        world_knowledge=WorldKnowledgeConfig(
            max_queries=2, samples_per_query=2, max_new_tokens=32, batch_size=4, torch_threads=1
        ),
    )
    root = tmp_path_factory.mktemp("engine")
    generate_world(str(root / "world"), world_config("tiny", seed=3), progress=lambda *_: None)
    stats = build_data(str(root / "world"), str(root / "out"), cfg, validate=True, progress=print)
    samples = pq.read_table(str(root / "out" / "samples")).to_pandas()
    return root, stats, samples


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for the servers the tests start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendant_pids_titled(word: str) -> list[int]:
    """Processes of this test's own Ray (descendants of this process) whose title names ``word``."""
    me, found = os.getpid(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            if word not in title:
                continue
            p = int(pid)
            while p > 1:
                p = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
                if p == me:
                    found.append((int(pid), title))
                    break
        except (OSError, ValueError, IndexError):
            continue
    return found
