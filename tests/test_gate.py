"""The gate learns from the logs it gates: label rules on constructed logs, calibration on constructed scores with a
known base rate, and no generated world or eval/ behind it."""

import ast
import os
import pathlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from crops_ray.discriminator.calibration import (
    Calibration,
    expected_calibration_error,
    fit_on_scores,
)
from crops_ray.discriminator.log_labels import (
    UNLABELLED,
    LogEvidence,
    LogLabelConfig,
    build_log_labels,
    query_split,
    sibling_queries,
)


def _log(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """(request_id, query, video_id, stage) rows as a search log."""
    return pd.DataFrame(rows, columns=["request_id", "query", "video_id", "stage"])


def _constructed_log() -> pd.DataFrame:
    rows = [
        ("r1", "jaguar cubs", "v_cub1", "clicked"),
        ("r2", "jaguar cubs", "v_cub1", "clicked"),  # two requests: repeated evidence
        ("r1", "jaguar cubs", "v_cub2", "clicked"),  # one click: no rule decides it
        ("r3", "jaguar hunting", "v_hunt", "clicked"),  # a sibling's click
        ("r4", "jaguar", "v_any", "clicked"),  # "jaguar" is refined by "jaguar cubs": not a sibling
        ("r5", "jaguar cubs slow motion", "v_slow", "clicked"),  # refines "jaguar cubs": not a sibling
        ("r6", "python decorators", "v_py", "clicked"),
    ]
    rows += [(f"s{i}", "jaguar cubs", "v_skip", "exposed") for i in range(3)]  # shown 3 times, never clicked
    rows += [("r2", "jaguar cubs", "v_filtered", "filtered")]
    return _log(rows)


def test_siblings_share_a_term_and_neither_refines_the_other():
    sib = sibling_queries(["jaguar cubs", "jaguar hunting", "jaguar", "jaguar cubs slow motion", "python decorators"])
    assert sib["jaguar cubs"] == {"jaguar hunting"}
    assert sib["jaguar hunting"] == {"jaguar cubs", "jaguar cubs slow motion"}
    assert sib["jaguar"] == set() and sib["python decorators"] == set()


def test_each_label_rule_on_a_constructed_log():
    ev = LogEvidence(_constructed_log(), LogLabelConfig(min_positives=0))
    q = "jaguar cubs"
    videos = ["v_cub1", "v_cub2", "v_hunt", "v_any", "v_slow", "v_skip", "v_filtered", "v_py"]
    labels, rules = ev.label([q] * len(videos), videos)
    got = dict(zip(videos, zip(labels.tolist(), rules)))
    assert got["v_cub1"] == (1, "repeat_click")
    assert got["v_hunt"] == (0, "sibling")
    for undecided in ("v_cub2", "v_any", "v_slow", "v_skip", "v_filtered", "v_py"):
        assert got[undecided] == (UNLABELLED, None), undecided
    # The skipped rule is opt-in (logs without positions cannot tell a skip from an unseen result).
    ev = LogEvidence(_constructed_log(), LogLabelConfig(min_positives=0, skipped_share=0.2))
    assert ev.label([q], ["v_skip"])[0].tolist() == [0] and ev.label([q], ["v_skip"])[1] == ["skipped"]
    # A video shown for the query and not clicked is no sibling negative (most likely nobody looked at it).
    shown = _log(list(_constructed_log().itertuples(index=False)) + [("r7", "jaguar cubs", "v_hunt", "exposed")])
    assert LogEvidence(shown, LogLabelConfig(min_positives=0)).label([q], ["v_hunt"])[0].tolist() == [UNLABELLED]
    # A sibling that shares a clicked video with the query is the same intent: its clicks are no evidence against.
    shared = _log(list(_constructed_log().itertuples(index=False)) + [("r8", "jaguar hunting", "v_cub1", "clicked")])
    assert LogEvidence(shared, LogLabelConfig(min_positives=0)).label([q], ["v_hunt"])[0].tolist() == [UNLABELLED]
    # A video clicked for the query is never a negative, whatever a sibling did.
    both = _log(list(_constructed_log().itertuples(index=False)) + [("r9", "jaguar hunting", "v_cub2", "clicked")])
    assert LogEvidence(both, LogLabelConfig(min_positives=0)).label([q], ["v_cub2"])[0].tolist() == [UNLABELLED]


def test_a_log_with_too_few_repeat_clicks_falls_back_to_single_clicks():
    ev = LogEvidence(_constructed_log(), LogLabelConfig(min_positives=5))
    assert ev.min_clicks == 1  # one repeat_click pair < 5: single clicks count, and stats.json says so
    assert ev.label(["jaguar cubs"], ["v_cub2"])[0].tolist() == [1]
    assert LogEvidence(_constructed_log(), LogLabelConfig(min_positives=1)).min_clicks == 2


def test_the_training_sample_is_balanced_split_by_query_and_never_negates_a_click():
    rng = np.random.default_rng(0)
    rows = []
    for topic in range(30):
        for facet in range(4):
            q = f"topic{topic} facet{facet}"
            for r in range(3):
                for k in range(3):
                    rows.append((f"{q}-{r}", q, f"v{topic}-{facet}-{k}", "clicked"))
            rows.append((f"{q}-x", q, f"v{topic}-{facet}-{rng.integers(9)}x", "exposed"))
    log = _log(rows)
    ev = LogEvidence(log, LogLabelConfig(min_positives=0, positives_per_query=3, negatives_per_positive=2.0))
    videos = sorted(set(log["video_id"])) + [f"other{i}" for i in range(50)]
    table = build_log_labels(ev, videos)
    df = table.to_pandas()
    pos, neg = df[df["label"] == 1], df[df["label"] == 0]
    assert len(pos) == 120 * 3 and abs(len(neg) - 2 * len(pos)) <= 0.05 * len(pos)
    assert set(df["rule"]) == {"repeat_click", "sibling"} or set(df["rule"]) == {"repeat_click", "sibling", "random"}
    assert (neg["rule"] == "sibling").mean() > 0.6  # siblings first (sibling_share 0.7)
    clicked = set(zip(log.loc[log["stage"] == "clicked", "query"], log.loc[log["stage"] == "clicked", "video_id"]))
    assert not any((q, v) in clicked for q, v in zip(neg["query"], neg["video_id"]))
    # A query's pairs are all on one side of the split, and both sides are used.
    assert df.groupby("query")["heldout"].nunique().max() == 1 and 0.2 < df["heldout"].mean() < 0.8
    assert (df["heldout"] == query_split(df["query"].tolist(), heldout=True)).all()
    # Sibling negatives share the topic (another facet: the hard case) or the facet (another topic), never both.
    sib = neg[neg["rule"] == "sibling"]
    topic, facet = sib["video_id"].str.slice(1).str.split("-").str[0], sib["video_id"].str.split("-").str[1]
    same_topic = sib["query"].str.split().str[0] == "topic" + topic
    same_facet = sib["query"].str.split().str[1] == "facet" + facet
    assert (same_topic ^ same_facet).all() and same_topic.any()


# ---------------------------------------------------------------------------------------------- calibration


def _scores(rng, n_pos: int, n_easy: int, n_hard: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores: positives ~ N(2, 1); easy negatives ~ N(-3, 1); hard (sibling-like) negatives ~ N(0, 1)."""
    raw = np.concatenate([rng.normal(2, 1, n_pos), rng.normal(-3, 1, n_easy), rng.normal(0, 1, n_hard)])
    return raw, np.concatenate([np.ones(n_pos), np.zeros(n_easy + n_hard)]).astype(np.int8)


def _cal(raw, labels) -> Calibration:
    return fit_on_scores(raw, labels, "m", "cross-encoder", "test", 0.6, held_raw=raw, held_labels=labels)


def test_a_calibration_fitted_on_pairs_drawn_like_the_candidates_has_their_base_rate():
    """Candidates with a known base rate (0.1): fitted on labelled pairs drawn like them, theta is calibrated there
    and the kept pairs' mean theta estimates their precision; fitted on a balanced set, theta is far too high."""
    rng = np.random.default_rng(0)
    cand_raw, cand_y = _scores(rng, 1000, 4500, 4500)
    like_raw, like_y = _scores(rng, 300, 1350, 1350)  # labelled pairs drawn like the candidates
    bal_raw, bal_y = _scores(rng, 2000, 1000, 1000)  # a balanced labelled set: base rate 0.5
    like, balanced = _cal(like_raw, like_y), _cal(bal_raw, bal_y)
    assert expected_calibration_error(like.theta(cand_raw), cand_y) < 0.03
    assert expected_calibration_error(balanced.theta(cand_raw), cand_y) > 0.06
    kept = like.theta(cand_raw) > 0.6
    assert abs(cand_y[kept].mean() - like.theta(cand_raw)[kept].mean()) < 0.05  # estimated ~ true precision
    assert like.raw_threshold_at_alpha == pytest.approx((np.log(0.6 / 0.4) - like.b) / like.a)


def test_calibrating_on_pairs_drawn_like_the_candidates_survives_a_shifted_negative_mix():
    """Candidates whose negatives are mostly hard (siblings): a calibration fitted on easy negatives says theta is
    high where the candidates are mostly irrelevant; one fitted on labelled candidates does not."""
    rng = np.random.default_rng(1)
    cand_raw, cand_y = _scores(rng, 1000, 1000, 8000)
    easy_raw, easy_y = _scores(rng, 1000, 1000, 0)  # a calibration set of random negatives only
    like_raw, like_y = _scores(rng, 300, 300, 2400)  # labelled pairs drawn like the candidates
    easy, like = _cal(easy_raw, easy_y), _cal(like_raw, like_y)
    ece_easy = expected_calibration_error(easy.theta(cand_raw), cand_y)
    ece_like = expected_calibration_error(like.theta(cand_raw), cand_y)
    assert ece_like < 0.03 and ece_easy > 2 * ece_like
    kept = easy.theta(cand_raw) > 0.6
    assert cand_y[kept].mean() < 0.6 < easy.theta(cand_raw)[kept].mean()  # the easy set's alpha lets noise through


def test_each_source_gets_its_own_calibration_from_its_own_labelled_candidates():
    """P1's candidates are mostly relevant, P2's mostly not: at the same raw score a P1 candidate is likelier
    relevant, and each source's theta says so; a source with too few labelled candidates uses the pooled one."""
    import pandas as pd

    from crops_ray.discriminator.config import DiscriminatorConfig
    from crops_ray.discriminator.gate import calibrate_gate

    rng = np.random.default_rng(2)
    p1_raw, p1_y = _scores(rng, 800, 100, 100)  # base rate 0.8
    p2_raw, p2_y = _scores(rng, 200, 900, 900)  # base rate 0.1
    n1, n2 = len(p1_raw), len(p2_raw)
    queries = [f"q{i}" for i in range(n1 + n2)]
    held = query_split(queries, heldout=True)
    scored = pd.DataFrame(
        {
            "query": queries,
            "video_id": [f"v{i}" for i in range(n1 + n2)],
            "raw": np.concatenate([p1_raw, p2_raw]),
            "reformulation": np.arange(n1 + n2) < n1,
            "recommendation": np.arange(n1 + n2) >= n1,
        }
    )
    y = np.concatenate([p1_y, p2_y])

    class Known:  # the log's evidence, here the known labels of every pair
        def label(self, qs, vs):
            idx = [int(v[1:]) for v in vs]
            return y[idx].astype(np.int8), ["repeat_click" if y[i] else "sibling" for i in idx]

    cal, info = calibrate_gate(DiscriminatorConfig(), "m", scored, Known(), None, None, 0.6)
    assert set(cal.sources) == {"reformulation", "recommendation"} and info["calibration_pairs"] == held.sum()
    raw0 = np.array([1.0])
    assert cal.theta(raw0, "reformulation")[0] > cal.theta(raw0)[0] > cal.theta(raw0, "recommendation")[0]
    for name, raw, labels in (("reformulation", p1_raw, p1_y), ("recommendation", p2_raw, p2_y)):
        assert expected_calibration_error(cal.theta(raw, name), labels) < 0.04, name
    few = scored[~(scored["reformulation"] & (np.arange(n1 + n2) % 10 != 0))]  # P1 cut to a handful
    cal, info = calibrate_gate(DiscriminatorConfig(), "m", few, Known(), None, None, 0.6)
    assert "reformulation" not in cal.sources and "pooled" in info["sources"]["reformulation"]["calibration"]
    assert cal.theta(raw0, "reformulation")[0] == cal.theta(raw0)[0]


def test_expected_calibration_error_on_known_cases():
    assert expected_calibration_error(np.array([0.9, 0.9, 0.1, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.1)
    assert expected_calibration_error(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.0)
    assert np.isnan(expected_calibration_error(np.array([]), np.array([])))


# ---------------------------------------------------------------------------------------------- no leak


ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("folder", ["crops_ray/discriminator", "crops_ray/engine"])
def test_the_gate_never_imports_a_generated_world(folder):
    """The engine and the gate read the logs only; world truth lives with the world (the audit imports it apart,
    after the engine's output exists: engine/build.py's _audit, the one exception, reads eval/ only to measure)."""
    for path in sorted((ROOT / folder).glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("crops_ray.world"):
                    assert path.name == "build.py" and name == "crops_ray.world.audit", f"{path}: imports {name}"


def test_gate_labels_and_weights_are_the_same_without_eval(tmp_path):
    """The gate's labels and training set from a world's search log are the same bytes whether or not eval/ is
    beside the logs (the gate reads only the search log and the videos)."""
    import shutil

    import pyarrow.parquet as pq

    from crops_ray.discriminator.gate import _digest, with_text
    from crops_ray.schema import table_files
    from crops_ray.world.generator import generate_world, world_config

    world = tmp_path / "w"
    generate_world(str(world), world_config("tiny", seed=5, users=40), progress=lambda *_: None)
    bare = tmp_path / "bare"
    shutil.copytree(world, bare, ignore=shutil.ignore_patterns("eval", "world.json"))
    digests = []
    for logs in (world, bare):
        search = pq.read_table(
            table_files(str(logs), "search_log"), columns=["request_id", "query", "video_id", "stage"]
        )
        videos = pq.read_table(table_files(str(logs), "videos"))
        labels = build_log_labels(LogEvidence(search), videos["video_id"].to_pylist())
        digests.append(_digest(with_text(labels, videos)))
    assert digests[0] == digests[1] and os.path.isdir(world / "eval") and not os.path.exists(bare / "eval")


def test_the_cross_encoder_learns_the_facet_from_labels(tmp_path):
    """A few dozen steps of the pointwise loss from the packaged weights (short texts: seconds): the loss falls
    and the trained gate ranks each query's own facet above its sibling's."""
    from crops_ray.discriminator.config import DiscriminatorConfig
    from crops_ray.discriminator.cross_encoder import load, logits, train_cross_encoder

    docs = {
        "jaguar cubs": "Jaguar cubs play by the river with their mother.",
        "jaguar hunting": "A jaguar hunts caimans at night in the wetlands.",
        "python decorators": "Python decorators explained with examples.",
        "python snake care": "Caring for a ball python snake in a terrarium.",
    }
    rows = [{"query": q, "text": t, "label": int(q == tq)} for q in docs for tq, t in docs.items()] * 8
    said = []
    cfg = DiscriminatorConfig(fine_tune_epochs=4, fine_tune_lr=5e-5, fine_tune_batch_size=16)
    folder = train_cross_encoder(cfg, pa.Table.from_pylist(rows), str(tmp_path / "gate"), progress=said.append)
    losses = [float(m.split("loss ")[1].split()[0]) for m in said if "epoch" in m]
    assert len(losses) == 4 and losses[-1] < losses[0]
    tok, model = load(folder)
    q = list(docs)
    own = logits(tok, model, q, [docs[x] for x in q], 8, 64)
    sibling = logits(tok, model, q, [docs[x] for x in ["jaguar hunting", "jaguar cubs", "python snake care",
                                                        "python decorators"]], 8, 64)  # fmt: skip
    assert (own > sibling).all()


def test_mined_candidates_the_log_labels_join_the_training_labels():
    """The gate also learns from the pairs it will decide: mined candidates that a rule labels join the sample with
    origin 'candidates'; unlabelled candidates do not."""
    ev = LogEvidence(_constructed_log(), LogLabelConfig(min_positives=0))
    cands = pd.DataFrame({"query": ["jaguar hunting"] * 3, "video_id": ["v_cub1", "v_hunt", "v_new"]})
    table = build_log_labels(ev, ["v_cub1", "v_hunt", "v_py", "v_x"], cands).to_pandas()
    mined = table[table["origin"] == "candidates"]
    assert mined[["video_id", "label", "rule"]].values.tolist() == [["v_cub1", 0, "sibling"]]
    assert set(table["origin"]) == {"sample", "candidates"} and not table.duplicated(["query", "video_id"]).any()


def test_logs_that_label_too_few_pairs_stop_with_what_to_pass_instead():
    """No click at all (nothing to learn from), or candidates the log labels only one way (nothing to calibrate):
    an error naming the settings that supply labels, never a gate trained or calibrated on nothing."""
    import pandas as pd

    from crops_ray.discriminator.config import DiscriminatorConfig
    from crops_ray.discriminator.gate import calibrate_gate, train_gate

    shown = _log([(f"r{i}", f"query {i % 7}", f"v{i}", "exposed") for i in range(40)])
    videos = pa.table({"video_id": [f"v{i}" for i in range(40)], "text": [f"video {i}" for i in range(40)]})
    with pytest.raises(ValueError, match="too few pairs to train the gate.*discriminator.labelled_pairs"):
        train_gate(DiscriminatorConfig(), pa.Table.from_pandas(shown), videos, progress=lambda *_: None)

    scored = pd.DataFrame(
        {"query": [f"q{i}" for i in range(200)], "video_id": [f"v{i}" for i in range(200)], "raw": np.zeros(200)}
    ).assign(reformulation=True, recommendation=False)

    class AllRelevant:
        def label(self, qs, vs):
            return np.ones(len(vs), np.int8), ["repeat_click"] * len(vs)

    with pytest.raises(ValueError, match="needs relevant and irrelevant pairs.*discriminator.labelled_pairs"):
        calibrate_gate(DiscriminatorConfig(), "m", scored, AllRelevant(), None, lambda q, t: np.zeros(len(q)), 0.6)
