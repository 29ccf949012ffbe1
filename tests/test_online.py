"""The simulated online A/B test: it ranks retrievers the way users would feel them, and only by retriever."""

import numpy as np
import pandas as pd
import pytest

from crops_ray.significance import relative_change_bootstrap
from crops_ray.world import generator as G
from crops_ray.world import online as O


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("online") / "w"
    G.generate_world(str(out), G.world_config("tiny", seed=4), progress=lambda *_: None)
    return str(out), O.load_world(str(out))


def _engine_run(cat, queries):
    return {q: [cat.video_ids[v] for v in G.engine_candidates(cat, cat.query_index[q])[0]] for q in queries}


def test_oracle_beats_the_logging_engine_beats_random(world):
    path, loaded = world
    ocfg = O.OnlineConfig(k=20, users=150)  # 20 of ~1,000 videos: a random channel rarely finds the intent
    counts = O.simulate(path, {}, ocfg, progress=lambda *_: None, loaded=loaded)
    s = O.summarize(counts, "logging", ocfg).set_index("arm")
    assert s.loc["oracle", "ctr"] > s.loc["logging", "ctr"] > s.loc["random", "ctr"]
    assert s.loc["oracle", "lpr"] > s.loc["logging", "lpr"] > s.loc["random", "lpr"]
    assert s.loc["oracle", "rqr"] < s.loc["logging", "rqr"] < s.loc["random", "rqr"]
    # The interval is over users and excludes 0 for a gap this large.
    assert s.loc["random", "ctr_rel_high"] < 0 < s.loc["oracle", "ctr_rel_low"]


def test_common_random_numbers_identical_arms_give_identical_figures(world):
    path, loaded = world
    cfg, cat = loaded
    ocfg = O.OnlineConfig(k=10**6, users=60)
    queries = O.queries_needed(path, ocfg, loaded=loaded)
    run = _engine_run(cat, queries)
    counts = O.simulate(
        path, {"a": run, "b": dict(run)}, ocfg, built_in=("logging",), progress=lambda *_: None, loaded=loaded
    )
    by_arm = {arm: frame.drop(columns="arm").reset_index(drop=True) for arm, frame in counts.groupby("arm")}
    # The incumbent's candidates handed in as a run are the logging arm itself: same draws, same users.
    assert by_arm["a"].equals(by_arm["b"]) and by_arm["a"].equals(by_arm["logging"])
    s = O.summarize(counts, "a", ocfg).set_index("arm")
    assert s.loc["b", ["ctr_rel", "lpr_rel", "rqr_rel", "ctr_rel_low", "ctr_rel_high"]].abs().max() == 0


def test_table2_intervals_are_the_shared_bootstrap_over_users():
    """summarize's interval for each arm and metric is :func:`significance.relative_change_bootstrap` on the
    arms' per-user counts (users in the same order in both), not a bootstrap of its own."""
    rng = np.random.default_rng(1)
    requests = rng.poisson(3, size=200) + 1
    sessions = rng.poisson(2, size=200) + 1
    arms = {"base": 0.30, "better": 0.40}
    frames = []
    for arm, ctr in arms.items():
        frames.append(
            pd.DataFrame(
                {
                    "arm": arm,
                    "user": np.arange(200),
                    "requests": requests,
                    "clicked_requests": rng.binomial(requests, ctr),
                    "long_play_requests": rng.binomial(requests, ctr / 3),
                    "sessions": sessions,
                    "reformulated_sessions": rng.binomial(sessions, 1 - ctr),
                }
            ).sample(frac=1.0, random_state=int(ctr * 100))  # rows out of user order: summarize pairs by user
        )
    counts = pd.concat(frames, ignore_index=True)
    ocfg = O.OnlineConfig(resamples=500, confidence=0.9, seed=3)
    summary = O.summarize(counts, "base", ocfg).set_index("arm")
    by_arm = {arm: frame.sort_values("user") for arm, frame in counts.groupby("arm")}
    for metric, (num, den) in O.METRICS.items():
        ci = relative_change_bootstrap(
            by_arm["better"][num], by_arm["better"][den], by_arm["base"][num], by_arm["base"][den],
            resamples=500, confidence=0.9, seed=3,
        )  # fmt: skip
        row = summary.loc["better"]
        assert (row[f"{metric}_rel_low"], row[f"{metric}_rel_high"]) == (ci.low, ci.high)
        assert row[f"{metric}_rel"] == pytest.approx(ci.diff)
    assert summary.loc["better", "ctr_rel_low"] > 0  # a 30% -> 40% CTR lift on 200 users is found


def test_a_run_missing_a_query_is_an_error_and_a_non_world_is_refused(world, tmp_path):
    path, loaded = world
    with pytest.raises(KeyError, match="queries_needed"):
        O.simulate(path, {"partial": {}}, O.OnlineConfig(users=5), built_in=(), progress=lambda *_: None, loaded=loaded)
    with pytest.raises(FileNotFoundError, match="world.json"):
        O.load_world(str(tmp_path))


def test_sessions_are_the_same_users_as_the_world(world):
    path, loaded = world
    cfg, cat = loaded
    sessions = O.plan_sessions(cfg, cat, O.OnlineConfig(users=30))
    weights = G.interest_weights(cat, cfg)
    for s in sessions:
        assert s.intent[0] in G.user_interests(cfg, s.user, weights)
    assert len({s.user for s in sessions}) > 20 and np.mean([len(sessions) / 30]) > 1


def _online_ab_main():
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines", "online_ab.py")
    spec = importlib.util.spec_from_file_location("online_ab_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_pipeline_skips_logs_that_are_not_a_world_with_a_reason(tmp_path, capsys):
    (tmp_path / "logs").mkdir()
    (tmp_path / "runs").mkdir()
    args = ["--world", str(tmp_path / "logs"), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    assert _online_ab_main()(args) is None
    assert "skipped" in capsys.readouterr().out and not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["runs", "inside_runs", "above_both", "inside_world"])
def test_pipeline_refuses_an_out_that_overlaps_its_world_or_runs(tmp_path, where, capsys):
    world, runs = tmp_path / "w", tmp_path / "runs"
    world.mkdir()
    (world / "world.json").write_text("{}")
    (runs / "dpr" / "model").mkdir(parents=True)
    (runs / "dpr" / "model" / "weights.bin").write_bytes(b"trained")
    out = {"runs": runs, "inside_runs": runs / "online", "above_both": tmp_path, "inside_world": world / "ab"}[where]
    with pytest.raises(SystemExit) as exit_:
        _online_ab_main()(["--world", str(world), "--runs", str(runs), "--out", str(out), "--methods", "dpr"])
    assert exit_.value.code == 2 and "the input" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "runs",
        "runs/dpr",
        "runs/dpr/model",
        "runs/dpr/model/weights.bin",
        "w",
        "w/world.json",
    ]
