"""Outputs never destroy inputs: an --out that is, contains or lies inside an input is refused, an existing
folder crops-ray did not write is refused rather than emptied, and a failed run leaves the old output."""

import hashlib
import os

import pyarrow as pa
import pytest

from crops_ray import storage
from crops_ray.storage import Output, OutputError, check_output


def _digest(folder) -> dict[str, str]:
    """Every file under ``folder`` with its SHA-256: equal digests mean the folder is byte-identical."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


@pytest.fixture
def logs(tmp_path):
    """A small raw log folder in the contract's layout (one row per table)."""
    root = tmp_path / "data" / "logs"
    storage.write_table(pa.table({"video_id": ["v1"], "text": ["jaguar cub"]}), f"{root}/videos/part-0.parquet")
    storage.write_table(
        pa.table(
            {
                "request_id": ["r1"],
                "user_id": ["u1"],
                "query": ["jaguar"],
                "ts": [1_767_300_000],
                "video_id": ["v1"],
                "stage": ["clicked"],
            }
        ),
        f"{root}/search_log/part-0.parquet",
    )
    storage.write_table(
        pa.table({"user_id": ["u1"], "ts": [1_767_300_010], "video_id": ["v1"], "action": ["like"]}),
        f"{root}/rec_log/part-0.parquet",
    )
    return root


@pytest.mark.parametrize("where", ["same", "parent", "inside"])
def test_validate_refuses_an_out_that_overlaps_its_logs_and_leaves_them_byte_identical(logs, where, capsys):
    from pipelines.validate import main

    before = _digest(logs.parent)
    out = {"same": logs, "parent": logs.parent, "inside": logs / "validated"}[where]
    with pytest.raises(SystemExit) as exit_:
        main(["--logs", str(logs), "--out", str(out)])
    assert exit_.value.code == 2
    assert "input" in capsys.readouterr().err
    assert _digest(logs.parent) == before


def test_build_data_refuses_an_out_above_its_logs_before_anything_starts(logs, capsys):
    from pipelines.build_data import main

    before = _digest(logs.parent)
    with pytest.raises(SystemExit) as exit_:
        main(["--logs", str(logs), "--validate", "--out", str(logs.parent)])
    assert exit_.value.code == 2 and "contains the input" in capsys.readouterr().err
    assert _digest(logs.parent) == before


def test_train_evaluate_and_the_trec_importer_refuse_overlapping_outputs(logs, tmp_path, capsys):
    from pipelines.evaluate import main as evaluate_main
    from pipelines.import_trec_session import main as trec_main
    from pipelines.train import main as train_main

    before = _digest(logs.parent)
    for main, args in (
        (train_main, ["--data", str(logs), "--out", str(logs / "crops")]),
        (evaluate_main, ["--method", "bm25", "--logs", str(logs), "--out", str(logs.parent)]),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 2, args
    xml = tmp_path / "track" / "sessions.xml"
    xml.parent.mkdir()
    xml.write_text("<sessiontrack2013></sessiontrack2013>")
    with pytest.raises(SystemExit):
        trec_main(["--xml", str(xml), "--out", str(xml.parent)])
    assert xml.read_text() == "<sessiontrack2013></sessiontrack2013>"
    assert _digest(logs.parent) == before
    assert capsys.readouterr().err.count("error:") == 3


def test_an_existing_folder_we_did_not_write_is_refused_not_emptied(tmp_path):
    from crops_ray.world.generator import generate_world, world_config

    theirs = tmp_path / "their-folder"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not written by crops-ray"):
        generate_world(str(theirs), world_config("tiny", users=3), progress=lambda *_: None)
    assert (theirs / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    check_output(str(tmp_path / "empty"))  # an empty folder is fine
    with pytest.raises(OutputError, match="existing file"):
        check_output(str(theirs / "notes.txt"))


def test_our_own_output_is_replaced_whole_and_a_failed_run_keeps_the_old_one(tmp_path):
    out = tmp_path / "out"
    with Output(str(out)) as root:
        storage.write_bytes(f"{root}/a.txt", b"first")
    assert sorted(os.listdir(out)) == ["_SUCCESS", "a.txt"]
    with pytest.raises(RuntimeError):
        with Output(str(out)) as root:
            storage.write_bytes(f"{root}/b.txt", b"half")
            raise RuntimeError("crash half-way")
    assert sorted(os.listdir(out)) == ["_SUCCESS", "a.txt"] and not any(".tmp-" in p for p in os.listdir(tmp_path))
    with Output(str(out)) as root:  # ours (it has the marker): replaced whole
        storage.write_bytes(f"{root}/b.txt", b"second")
    assert sorted(os.listdir(out)) == ["_SUCCESS", "b.txt"]


def test_file_uris_write_a_real_folder(tmp_path):
    with Output(f"file://{tmp_path}/out") as root:
        storage.write_bytes(f"{root}/a.txt", b"x")
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"x" and not (tmp_path / "file:").exists()
    with pytest.raises(OutputError, match="absolute"):
        check_output("file://relative/out")


def test_object_store_path_deletes_nothing_before_the_new_output_is_complete(tmp_path, monkeypatch):
    """The object-store branch (no atomic rename) exercised on the local filesystem through pyarrow."""
    monkeypatch.setattr(storage, "is_local", lambda uri: False)
    out = str(tmp_path / "out")
    with Output(out) as root:
        storage.write_bytes(f"{root}/a.txt", b"first")
    assert sorted(os.listdir(out)) == ["_SUCCESS", "a.txt"]
    with pytest.raises(RuntimeError):
        with Output(out) as root:
            storage.write_bytes(f"{root}/b.txt", b"half")
            assert sorted(os.listdir(out)) == ["_SUCCESS", "a.txt"]  # the old output is still whole while writing
            raise RuntimeError("crash half-way")
    assert sorted(os.listdir(out)) == ["_SUCCESS", "a.txt"] and sorted(os.listdir(tmp_path)) == ["out"]
    with Output(out) as root:
        storage.write_bytes(f"{root}/b.txt", b"second")
    assert sorted(os.listdir(out)) == ["_SUCCESS", "b.txt"]


def test_replacing_an_output_leaves_no_moment_without_one(tmp_path, monkeypatch):
    """After every rename, swap and delete of the replacement, OUT exists whole (its _SUCCESS marker), and it holds
    the new output at the end; where the system cannot swap, the fallback still replaces it whole."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    if not storage.exchange_paths(str(a), str(b)):
        pytest.skip("this system or filesystem has no atomic exchange of two paths")
    out = tmp_path / "out"
    with Output(str(out)) as root:
        storage.write_bytes(f"{root}/a.txt", b"first")
    seen = []

    def watched(step):
        def run(*args, **kwargs):
            result = step(*args, **kwargs)
            seen.append((step.__name__, (out / "_SUCCESS").exists()))
            return result

        return run

    monkeypatch.setattr(os, "replace", watched(os.replace))
    monkeypatch.setattr(storage.shutil, "rmtree", watched(storage.shutil.rmtree))
    monkeypatch.setattr(storage, "exchange_paths", watched(storage.exchange_paths))
    with Output(str(out)) as root:
        storage.write_bytes(f"{root}/b.txt", b"second")
    assert seen and all(present for _, present in seen), seen
    assert sorted(os.listdir(out)) == ["_SUCCESS", "b.txt"] and sorted(os.listdir(tmp_path)) == ["a", "b", "out"]

    monkeypatch.setattr(storage, "exchange_paths", lambda *_: False)  # e.g. macOS: two renames
    with Output(str(out)) as root:
        storage.write_bytes(f"{root}/c.txt", b"third")
    assert sorted(os.listdir(out)) == ["_SUCCESS", "c.txt"] and sorted(os.listdir(tmp_path)) == ["a", "b", "out"]


def test_a_hung_lock_holder_makes_the_waiter_stop_with_the_lock_file_and_what_to_do(tmp_path):
    """Another process holds an entry's lock and never lets go: the second run stops after its timeout with a
    message naming the lock file, the holder's pid and what to do; once the holder is gone the lock is free."""
    import subprocess
    import sys
    import time

    entry = str(tmp_path / "cache" / "corpus-abc.parquet")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from crops_ray.storage import key_lock\n"
            "with key_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)",
            entry,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        lock_file = str(tmp_path / "cache" / ".locks" / "corpus-abc.parquet.lock")
        started = time.monotonic()
        with pytest.raises(storage.LockTimeout) as error:
            with storage.key_lock(entry, timeout_s=1.0):
                pytest.fail("the lock was taken while another process held it")
        assert 1.0 <= time.monotonic() - started < 5
        message = str(error.value)
        assert lock_file in message and f"pid {holder.pid}" in message and "hung, stop it" in message
    finally:
        holder.kill()
        holder.wait()
    with storage.key_lock(entry, timeout_s=5.0):  # the holder's death released its lock
        assert open(lock_file).read().strip() == str(os.getpid())
