"""Caches: keyed by the weights' content (not their path), and two runs at once leave one intact entry."""

import json
import multiprocessing
import os
import shutil

from crops_ray.discriminator import DiscriminatorConfig
from crops_ray.plumbing import weights_fingerprint


def _rows():
    import pyarrow as pa

    pairs = [("jaguar cubs", "Jaguar cubs play by the river."), ("python decorators", "Python decorators explained.")]
    return pa.Table.from_pylist(
        [{"query": q, "text": t, "label": int(q == tq)} for q, _ in pairs for tq, t in pairs] * 4
    )


def _train(cache: str, model: str, out: str) -> None:
    """One run (its own process): the gate trained on the same labels through the shared cache folder."""
    from crops_ray.discriminator.gate import train_model

    said = []
    folder = train_model(
        DiscriminatorConfig(model=model, cache_dir=cache, fine_tune_batch_size=4), _rows(), said.append
    )
    with open(out, "w") as f:
        json.dump({"folder": folder, "trained": any("epoch" in m for m in said)}, f)


def test_two_runs_at_once_train_the_gate_once_and_leave_one_intact_entry(tmp_path):
    from crops_ray.encoder import shallow_copy

    model = shallow_copy("minilm", str(tmp_path / "minilm-1l"), num_layers=1)
    cache = str(tmp_path / "cache")
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters, as two jobs on one machine
    runs = [spawn.Process(target=_train, args=(cache, model, str(tmp_path / f"run{i}.json"))) for i in range(2)]
    for p in runs:
        p.start()
    for p in runs:
        p.join(timeout=600)
    assert [p.exitcode for p in runs] == [0, 0]
    first, second = (json.load(open(tmp_path / f"run{i}.json")) for i in range(2))
    assert first["folder"] == second["folder"]
    assert sorted([first["trained"], second["trained"]]) == [False, True]  # the second waited, then read the first's
    entries = os.listdir(os.path.join(cache, "discriminators"))
    assert [e for e in entries if not e.startswith(".")] == [os.path.basename(first["folder"])]
    assert os.path.exists(os.path.join(first["folder"], "config.json"))


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

    from crops_ray.encoder import doc_tower_fingerprint
    from crops_ray.plumbing import model_path

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


def test_a_cached_gate_follows_its_base_weights_to_a_new_install(tmp_path):
    """The gate's cache key holds its base weights' content, not their folder: after the virtual environment is
    rebuilt elsewhere (a new checkout) the same labels find the trained gate instead of training again."""
    from crops_ray.discriminator.gate import train_model
    from crops_ray.encoder import shallow_copy

    model = shallow_copy("minilm", str(tmp_path / "venv-1" / "minilm-1l"), num_layers=1)
    cache = str(tmp_path / "cache")
    first = train_model(DiscriminatorConfig(model=model, cache_dir=cache, fine_tune_batch_size=4), _rows(), print)
    moved = str(shutil.move(os.path.dirname(model), tmp_path / "venv-2") / "minilm-1l")
    said = []
    again = train_model(DiscriminatorConfig(model=moved, cache_dir=cache, fine_tune_batch_size=4), _rows(), said.append)
    assert again == first and not any("epoch" in m for m in said)  # the cached gate, not a new training
