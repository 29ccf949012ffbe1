"""docs/scaling.md comes from bench/scaling.py: its growth table and hours follow from what it measured."""

import importlib.util
import json
import os

import pytest

# Loaded from its file: putting bench/ on sys.path would shadow the serve/ package with bench/serve.py.
_spec = importlib.util.spec_from_file_location(
    "bench_scaling", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "scaling.py")
)
scaling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scaling)


def _record(scale, log_rows, seconds, driver_mb):
    return {
        "scale": scale,
        "users": log_rows // 100,
        "world_seconds": 1.0,
        "rows": {"search_log": log_rows * 4 // 5, "rec_log": log_rows // 5, "videos": 100},
        "log_rows": log_rows,
        "work": {"pairs_scored": log_rows // 10, "llm_prompts": 10, "samples": 300, "groups": 64, "train_steps": 2},
        "seconds": seconds,
        "memory_mb": {
            step: {"driver_mb": driver_mb, "workers_mb": 900.0, "largest_worker_mb": 300.0, "ray_system_mb": 100.0}
            for step in seconds
        },
        "cpus": 2,
        "load_before": 0.1,
    }


def _fake_run(root):
    seed = root / "small"
    (seed / "data").mkdir(parents=True)
    (seed / "crops").mkdir()
    stats = {
        "cluster": {"cpus": 2},
        "rows_read": {"videos": 100, "search_log": 1000, "rec_log": 250},
        "seconds": {"users": 2.0, "pairs": 3.0, "score": 10.0, "llm_generate": 20.0},
        "discriminator": {"mined_pairs_scored": 400},
        "llm": {"calls": 10, "generated_tokens": 500},
        "sources": {"llm": {"kept": 2}},
        "samples": {"rows": 300},
    }
    (seed / "data" / "stats.json").write_text(json.dumps(stats))
    (seed / "crops" / "train_metrics.json").write_text(
        json.dumps({"samples_per_s": 8.0, "num_workers": 1, "config": {"doc_tower": "train"}})
    )
    (seed / "measured.json").write_text(json.dumps(_record("small", 1250, {"validate": 1.0, "score": 10.0}, 400.0)))
    return str(root)


def test_hours_follow_from_the_measured_rates(tmp_path, capsys):
    m = scaling.measured(os.path.join(_fake_run(tmp_path), "small"))
    assert m["pairs_per_core_s"] == pytest.approx(400 / 10 / 2) and m["tokens_per_core_s"] == pytest.approx(
        500 / 20 / 2
    )
    assert m["mining_rows_per_core_s"] == pytest.approx(1350 / 5 / 2) and m["kept_per_call"] == pytest.approx(0.2)
    text = scaling.main(
        [
            "plan",
            "--measured",
            str(tmp_path),
            "--search-rows",
            "1e6",
            "--synthetic-positives",
            "1000",
            "--vllm-tokens-per-gpu-s",
            "100",
            "--gpu-speedup-encoder",
            "10",
        ]
    )
    rows = {
        r["stage"].split(" (")[0].split(",")[0]: r
        for r in scaling.plan(
            m,
            scaling.argparse.Namespace(
                search_rows=1e6,
                synthetic_positives=1000,
                samples_per_group=8,
                epochs=1.0,
                gpu_speedup_encoder=10.0,
                gpu_speedup_train=60.0,
                vllm_tokens_per_gpu_s=100.0,
            ),
        )
    }
    # 1e6 rows x 0.4 pairs per row / 20 pairs per core-second = 20,000 core-seconds; / 10 on a GPU
    assert rows["discriminator over mined pairs"]["core_hours"] == pytest.approx(2e4 / 3600)
    assert rows["discriminator over mined pairs"]["gpu_hours"] == pytest.approx(2e3 / 3600)
    # 1000 positives / 0.2 kept per prompt x 50 tokens per prompt = 250,000 tokens at 100 tokens/s per GPU
    assert rows["LLM descriptions"]["gpu_hours"] == pytest.approx(2500 / 3600)
    assert "| synthetic positives (P3) | 1,000 | the paper |" in text and "assumption" in text
    with pytest.raises(SystemExit, match="missing"):
        scaling.measured(str(tmp_path / "nothing"))
    with pytest.raises(SystemExit, match="no SCALE/measured.json"):
        scaling.load_records(str(tmp_path / "small" / "data"))


def test_growth_gives_seconds_per_million_rows_and_the_ratio_of_the_two_largest_scales():
    records = [
        _record("small", 1_000_000, {"validate": 10.0, "score": 40.0}, 500.0),
        _record("medium", 10_000_000, {"validate": 100.0, "score": 600.0}, 520.0),
        _record("tiny", 100_000, {"validate": 2.0, "score": 5.0}, 450.0),
    ]
    text = "\n".join(scaling.growth(sorted(records, key=lambda r: r["log_rows"])))
    lines: dict[str, str] = {}  # the first row of each step: the seconds table (the memory table comes after)
    for line in text.splitlines():
        if line.startswith("| "):
            lines.setdefault(line.split(" | ")[0].lstrip("| "), line)
    # validate: 20, 10, 10 s per million rows -> flat from small to medium (1.00); score: 50, 40, 60 -> 1.50
    assert "| 20.0 | 10.0 | 10.0 | 1.00 |" in lines["validate"]
    assert "| 50.0 | 40.0 | 60.0 | 1.50 |" in lines["score"]
    # score's own unit (pairs scored = log rows / 10): 0.4 -> 0.6 ms per pair
    assert "0.40 -> 0.60 ms per pair scored (1.50x)" in lines["score"]
    assert "| 450 | 500 | 520 | 900 | 900 | 900 | 300 | 300 | 300 |" in text  # driver, workers, largest by scale


def test_memory_watch_sees_a_peak_between_two_takes():
    watch = scaling.MemoryWatch(every=0.05)
    try:
        before = watch.take()["driver_mb"]
        block = bytearray(200 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page so it is resident
        import time

        time.sleep(0.3)
        del block
        peak = watch.take()["driver_mb"]
        assert peak > before + 150
    finally:
        watch.close()
