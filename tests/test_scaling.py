"""docs/scaling.md comes from bench/scaling.py: the hours it prints follow from the run's measured numbers."""

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


def _fake_run(root):
    seed = root / "seed-0"
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
    return str(root)


def test_hours_follow_from_the_measured_rates(tmp_path, capsys):
    m = scaling.measured(_fake_run(tmp_path))
    assert m["pairs_per_core_s"] == pytest.approx(400 / 10 / 2) and m["tokens_per_core_s"] == pytest.approx(
        500 / 20 / 2
    )
    assert m["mining_rows_per_core_s"] == pytest.approx(1350 / 5 / 2) and m["kept_per_call"] == pytest.approx(0.2)
    text = scaling.main(
        [
            "--run",
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
    with pytest.raises(SystemExit, match="no seed"):
        scaling.measured(str(tmp_path / "nothing"))
