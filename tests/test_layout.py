"""The output layout (crops_ray/layout.py) and the demo's bookkeeping around it: what --reuse reads back, how the
stages are numbered and timed (crops_ray/demo.py)."""

from __future__ import annotations

import json

from crops_ray.demo import DemoSettings, Reuse, StageClock, timed
from crops_ray.experiment import ExperimentConfig
from crops_ray.layout import RunLayout, SeedLayout
from crops_ray.storage import SUCCESS_MARKER


def test_a_demo_folder_is_laid_out_as_the_readers_expect():
    seed = RunLayout("runs/demo").seed(2)
    assert seed.root == "runs/demo/seed-2"
    crops = seed.method("crops")
    assert (crops.model, crops.groups, crops.result_json) == (
        "runs/demo/seed-2/crops/model",
        "runs/demo/seed-2/crops/groups",
        "runs/demo/seed-2/crops/result.json",
    )
    # A trained method evaluates into eval/, BM25 and zero-shot into their own folder: readers try both, in order.
    assert [e.per_query for e in crops.evaluations] == [
        "runs/demo/seed-2/crops/eval/per_query.parquet",
        "runs/demo/seed-2/crops/per_query.parquet",
    ]
    assert crops.eval.index_json == "runs/demo/seed-2/crops/eval/index/index.json"
    assert seed.data.stats_json == "runs/demo/seed-2/data/stats.json"
    assert seed.world.world_json == "runs/demo/seed-2/world/world.json"
    assert seed.world.queries == "runs/demo/seed-2/world/eval/queries.parquet"
    assert seed.online.counts == "runs/demo/seed-2/online/online_counts.parquet"
    assert seed.sparse_init == "runs/demo/seed-2/sparse_init"
    assert RunLayout("runs/demo").metrics_json == "runs/demo/metrics.json"


def _finish(path, text="{}"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_reuse_reads_back_only_what_an_earlier_run_finished(tmp_path):
    seed = SeedLayout(str(tmp_path))
    methods = ["bm25", "dpr"]
    assert Reuse.find(seed, methods) == Reuse()
    _finish(tmp_path / "dpr" / "result.json")
    _finish(tmp_path / "bm25" / "result.json")
    found = Reuse.find(seed, methods)
    # Without the data DPR trained on, its result is not read back (it would not match a rebuilt engine's data);
    # BM25 trains on nothing, so its result is.
    assert found.methods == {"bm25", "dpr"} and not found.data
    assert found.method("bm25") and not found.method("dpr") and not found.whole(methods)
    _finish(tmp_path / "data" / "stats.json")
    assert not Reuse.find(seed, methods).data  # the validated logs are unfinished (no success marker)
    _finish(tmp_path / "validated" / SUCCESS_MARKER, "")
    again = Reuse.find(seed, methods)
    assert again.data and again.method("dpr") and again.whole(methods)
    assert not again.whole(methods + ["crops"])
    _finish(tmp_path / "world" / "world.json", json.dumps({"stats": {}}))
    assert Reuse.find(seed, methods).world


def test_the_clock_numbers_every_stage_and_times_only_what_ran():
    said = []
    clock = StageClock(3, progress=said.append)
    clock.stage("seed 0: validating")
    clock.stage(None)  # a stage with nothing to do still counts
    clock.stage("seed 0: BM25 (reused)")
    assert [line.split("  (")[0] for line in said] == ["\n[1/3] seed 0: validating", "\n[3/3] seed 0: BM25 (reused)"]
    seconds = {}
    with timed(seconds, "seed 0: validate"):
        pass
    with timed(seconds, None):  # read back: not timed
        pass
    assert list(seconds) == ["seed 0: validate"] and seconds["seed 0: validate"] >= 0


def test_the_stage_count_follows_the_methods_and_the_online_test(tmp_path):
    settings = DemoSettings(str(tmp_path), [0, 1], "0,1", ["bm25", "dpr"], ExperimentConfig(), logs=str(tmp_path))
    assert not settings.online  # your own logs have no simulated users (no world.json)
    assert settings.stages == 3 + 2 and settings.needs_data
    _finish(tmp_path / "world.json")
    assert settings.online and settings.stages == 3 + 2 + 1
    assert not DemoSettings(str(tmp_path), [0], "0", ["bm25"], ExperimentConfig()).needs_data
