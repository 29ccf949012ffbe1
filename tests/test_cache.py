"""Caches: keyed by the weights' content (not their path), and two runs at once leave one intact entry."""

import json
import multiprocessing
import os
import shutil

from crops_ray.discriminator import DiscriminatorConfig
from crops_ray.plumbing import weights_fingerprint


def _calibrate(cache: str, model: str, out: str) -> None:
    """One run (its own process): the world calibration of ``model`` through the shared cache folder."""
    from crops_ray.discriminator import load_or_fit_calibration

    cal = load_or_fit_calibration(
        DiscriminatorConfig(model=model, calibration_pairs=120, cache_dir=cache), progress=lambda *_: None
    )
    with open(out, "w") as f:
        json.dump(cal.__dict__, f)


def test_two_runs_at_once_fit_once_and_leave_one_intact_entry(tmp_path):
    from crops_ray.encoder import shallow_copy

    model = shallow_copy("minilm", str(tmp_path / "minilm-1l"), num_layers=1)
    cache = str(tmp_path / "cache")
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters, as two jobs on one machine
    runs = [spawn.Process(target=_calibrate, args=(cache, model, str(tmp_path / f"run{i}.json"))) for i in range(2)]
    for p in runs:
        p.start()
    for p in runs:
        p.join(timeout=600)
    assert [p.exitcode for p in runs] == [0, 0]
    first, second = (json.load(open(tmp_path / f"run{i}.json")) for i in range(2))
    assert first == second  # the second waited for the first's entry instead of fitting its own
    entries = os.listdir(os.path.join(cache, "calibration"))
    assert len([e for e in entries if e.endswith(".json")]) == 1 and not [e for e in entries if ".tmp" in e]
    stored = json.load(open(os.path.join(cache, "calibration", next(e for e in entries if e.endswith(".json")))))
    assert stored == first


def test_weights_are_identified_by_content_not_by_path(tmp_path):
    from crops_ray.encoder import shallow_copy

    a = shallow_copy("minilm", str(tmp_path / "a"), num_layers=1)
    moved = shutil.copytree(a, tmp_path / "elsewhere" / "a")
    assert weights_fingerprint(str(moved)) == weights_fingerprint(a)  # the same weights moved: the same entry
    from safetensors.torch import load_file, save_file

    changed = shutil.copytree(a, tmp_path / "changed")  # same files, same sizes, one weight nudged
    weights = load_file(str(changed / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3
    save_file(weights, str(changed / "model.safetensors"), metadata={"format": "pt"})
    assert os.path.getsize(changed / "model.safetensors") == os.path.getsize(os.path.join(a, "model.safetensors"))
    assert weights_fingerprint(str(changed)) != weights_fingerprint(a)


def test_a_corpus_copied_elsewhere_keeps_its_embedding_cache_entry(tmp_path):
    """The corpus part of the cache key is the files' names and bytes, not their folder or modification time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from crops_ray.plumbing import doc_tower_fingerprint, model_path

    table = pa.table({"video_id": ["a", "b"], "text": ["jaguar cubs", "python tutorial"]})
    for world in ("w1", "w2"):
        (tmp_path / world / "videos").mkdir(parents=True)
        pq.write_table(table, tmp_path / world / "videos" / "part-0.parquet")
    model = model_path("minilm")
    first, copy = (
        doc_tower_fingerprint(model, [str(tmp_path / w / "videos" / "part-0.parquet")]) for w in ("w1", "w2")
    )
    assert first == copy
    pq.write_table(table.slice(0, 1), tmp_path / "w2" / "videos" / "part-0.parquet")
    assert doc_tower_fingerprint(model, [str(tmp_path / "w2" / "videos" / "part-0.parquet")]) != first


def test_a_cached_calibration_follows_its_weights_to_a_new_install(tmp_path):
    """A zero-shot calibration records its model's folder; after the virtual environment is rebuilt elsewhere (a
    new checkout) the entry, keyed by the weights' content, is used with the weights where they are now, not an error
    about the old folder."""
    from crops_ray.discriminator import load_or_fit_calibration
    from crops_ray.discriminator.calibration import calibrated_weights
    from crops_ray.encoder import shallow_copy

    model = shallow_copy("minilm", str(tmp_path / "venv-1" / "minilm-1l"), num_layers=1)
    cache = str(tmp_path / "cache")
    cfg = DiscriminatorConfig(model=model, calibration_pairs=120, cache_dir=cache)
    first = load_or_fit_calibration(cfg, progress=lambda *_: None)
    assert first.model == model
    moved = str(shutil.move(os.path.dirname(model), tmp_path / "venv-2") / "minilm-1l")
    said = []
    again = load_or_fit_calibration(
        DiscriminatorConfig(model=moved, calibration_pairs=120, cache_dir=cache), progress=said.append
    )
    assert not said  # the cached entry, not a new fit
    assert (again.a, again.b) == (first.a, first.b) and again.model == moved
    assert calibrated_weights(again, cfg) == moved
