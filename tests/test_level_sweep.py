"""HLA's level maps as configuration, and the level sweep: each named map relabels as documented, level-0 sources
become stored negatives, the validation split comes from the training log alone, and a sweep runs end to end."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crops_ray import level_sweep as LS
from crops_ray.hla import LEVEL_MAPS, PAPER, GroupConfig, LevelConfig, build_groups, log_samples

STAGE_ROWS = [  # (request, query, video, stage)
    ("r1", "jaguar", "v_click", "clicked"),
    ("r1", "jaguar", "v_shown", "exposed"),
    ("r1", "jaguar", "v_ranked", "ranked"),
    ("r1", "jaguar", "v_cut", "filtered"),
    ("r2", "python", "v_py", "exposed"),  # a query nobody clicked
]


def _log():
    rows = list(zip(*STAGE_ROWS))
    search = pa.table({"request_id": rows[0], "query": rows[1], "video_id": rows[2], "stage": rows[3]})
    videos = pa.table({"video_id": list(rows[2]), "text": [f"text of {v}" for v in rows[2]]})
    return search, videos


@pytest.mark.parametrize("name", list(LEVEL_MAPS))
def test_each_named_map_labels_the_log_stages_as_documented(name):
    search, videos = _log()
    cfg = LevelConfig(name=name)
    assert cfg.levels == LEVEL_MAPS[name] and cfg.name == name
    got = {r["video_id"]: r["level"] for r in log_samples(search, videos, cfg).to_pylist()}
    expected = {v: LEVEL_MAPS[name][stage] for _, _, v, stage in STAGE_ROWS}
    assert got == expected
    groups = build_groups(log_samples(search, videos, cfg), GroupConfig(group_size=8)).to_pylist()
    # A query gives examples when some candidate is above level 0 ("python" only has an exposed video); a source at
    # level 0 stays in its query's groups as a stored negative, never the anchor.
    assert {g["query"] for g in groups} == {"jaguar"} | ({"python"} if cfg.levels["exposed"] > 0 else set())
    for g in groups:
        assert g["levels"][0] == max(g["levels"]) > 0
        zero = {v for v, lv in zip(g["video_ids"], g["levels"]) if lv == 0}
        if g["query"] == "jaguar":
            assert zero == {v for v, lv in expected.items() if lv == 0 and v != "v_py"}


def test_the_documented_hypotheses():
    assert LEVEL_MAPS["paper"] == PAPER == LevelConfig().levels
    m = LEVEL_MAPS["mined_below_clicks"]
    assert m["reformulation"] > m["clicked"] > m["recommendation"] == m["llm"] > m["exposed"] > m["ranked"]
    assert LEVEL_MAPS["exposed_negative"]["exposed"] == 0 and LEVEL_MAPS["exposed_negative"]["clicked"] == 4
    assert LEVEL_MAPS["lower_stages_negative"]["ranked"] == LEVEL_MAPS["lower_stages_negative"]["filtered"] == 0
    assert set(LEVEL_MAPS["binary"].values()) == {0, 1}


def test_level_config_validates_named_and_explicit_maps():
    custom = LevelConfig(levels={**PAPER, "exposed": 2})
    assert custom.name == "custom" and custom.levels["exposed"] == 2
    with pytest.raises(ValueError, match="unknown level map"):
        LevelConfig(name="papr")
    with pytest.raises(ValueError, match=">= 0"):
        LevelConfig(levels={**PAPER, "exposed": -1})
    with pytest.raises(ValueError, match="some source must be a positive"):
        LevelConfig(levels={k: 0 for k in PAPER})
    with pytest.raises(ValueError, match="no level for sources"):
        LevelConfig(levels={"clicked": 1})
    with pytest.raises(ValueError, match="unknown level maps"):
        LS.parse_maps("paper,bogus")
    assert LS.parse_maps("binary,paper") == ("paper", "binary")


def test_the_validation_split_is_made_from_the_training_log_alone(tmp_path):
    """Held-out queries are a hash share of the clicked ones; their targets are the log's clicks; no eval/ read."""
    queries = [f"q{i}" for i in range(400)]
    search = pa.table(
        {
            "request_id": [f"r{i}" for i in range(400)],
            "user_id": ["u"] * 400,
            "query": queries,
            "ts": list(range(400)),
            "video_id": [f"v{i}" for i in range(400)],
            "stage": ["clicked" if i % 2 == 0 else "exposed" for i in range(400)],
        }
    )
    held = LS.validation_queries(search, seed=0)
    assert held == LS.validation_queries(search, seed=0) and held != LS.validation_queries(search, seed=1)
    assert 5 < len(held) < 40 and all(int(q[1:]) % 2 == 0 for q in held)  # ~10 % of the 200 clicked queries
    validated = tmp_path / "validated"
    for table, data in (("search_log", search), ("videos", pa.table({"video_id": ["v0"], "text": ["t"]}))):
        (validated / table).mkdir(parents=True)
        pq.write_table(data, validated / table / "part-0.parquet")
    from crops_ray.schema import table_files

    videos = table_files(str(validated), "videos")
    folder = LS.write_validation(search, videos, held, str(tmp_path / "out"))  # no eval/ anywhere: still works
    ct = pq.read_table(f"{folder}/eval/ct.parquet").to_pylist()
    assert {(r["query"], r["video_id"]) for r in ct} == {(q, "v" + q[1:]) for q in held}
    assert os.path.exists(f"{folder}/videos/part-0.parquet")


@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_of_two_maps_on_the_tiny_world(tiny_engine, tmp_path):
    from crops_ray.encoder import shallow_copy
    from crops_ray.experiment import ExperimentConfig
    from crops_ray.train import TrainConfig

    root, stats, _ = tiny_engine
    model = shallow_copy("minilm", str(tmp_path / "minilm-1l"), num_layers=1)
    cfg = ExperimentConfig(
        train=TrainConfig(
            model=model, max_steps=2, batch_size=8, max_length=32, shared_towers=False, doc_tower="frozen", log_every=1
        )
    )
    out = tmp_path / "sweep"
    result = LS.run_level_sweep(
        str(root / "out"), str(root / "world"), str(root / "out" / "validated"), str(out), ("paper", "binary"), cfg
    )
    assert set(result["rows"]) == {"paper", "binary"} and result["picked"] in {"paper", "binary"}
    binary = result["rows"]["binary"]
    assert binary["test"]["recall@100_ct"] > 0 and "recall@100_ct" in binary["vs_paper"]["validation"]
    groups = pq.read_table(out / "binary" / "crops" / "groups").to_pylist()
    assert {lv for g in groups for lv in g["levels"]} <= {0, 1} and any(0 in g["levels"] for g in groups)
    held = set(pq.read_table(out / "validation" / "eval" / "ct.parquet")["query"].to_pylist())
    assert held and not held & {g["query"] for g in groups}  # validation queries never trained on
    table = LS.sweep_table([result])
    assert "| binary |" in table and "(reference)" in table
    assert json.loads((out / "paper" / "crops" / "sweep.json").read_text())["map"] == "paper"
