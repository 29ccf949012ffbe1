"""Output folders on any filesystem pyarrow writes (local, s3://, gs://), replaced whole or not at all.

On a local disk a stage writes into ``OUT.tmp-<pid>`` and renames it over ``OUT`` at the end, so a run that
is interrupted half-way leaves the previous output intact. Object stores have no atomic rename: there the stage
writes into ``OUT.tmp-<pid>`` too and, once that is complete, the old output is deleted and the new one copied
in place; readers check the ``_SUCCESS`` marker, written last.

An output never destroys an input: :func:`check_output` refuses an ``OUT`` that is, contains or lies inside
one of the stage's inputs, and an existing ``OUT`` that crops-ray did not write (no ``_SUCCESS`` marker) is
refused rather than emptied.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from crops_ray.schema import filesystem_and_path

SUCCESS_MARKER = "_SUCCESS"


class OutputError(ValueError):
    """An output folder that would destroy an input or data this system did not write."""


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    """``file:///a/b`` -> ``/a/b``; other local paths unchanged (so ``file://`` outputs are real folders)."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
        if not uri.startswith("/"):
            raise OutputError(f"file:// URIs must be absolute (file:///path), got file://{uri}")
    return uri


def _normalized(uri: str) -> str:
    """A comparable form: absolute real paths on a local disk, ``scheme://bucket/key`` elsewhere."""
    if "://" not in uri or uri.startswith("file://"):
        return os.path.realpath(os.path.abspath(local_path(uri)))
    scheme, rest = uri.split("://", 1)
    return f"{scheme.lower()}://" + "/".join(part for part in rest.split("/") if part not in ("", "."))


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def check_output(out: str, inputs=(), replaces: bool = True) -> None:
    """Refuse ``out`` when it is, contains or lies inside any of ``inputs``; with ``replaces`` (the stage swaps
    the whole folder), also refuse an existing non-empty ``out`` that has no ``_SUCCESS`` marker of ours."""
    target = _normalized(out)
    for given in inputs:
        if not given:
            continue
        source = _normalized(given)
        if _inside(target, source) or _inside(source, target):
            relation = "is" if target == source else ("lies inside" if _inside(target, source) else "contains")
            raise OutputError(
                f"output {out} {relation} the input {given}: writing it would replace or delete that input. "
                f"Choose an --out outside every input."
            )
    if not replaces:
        return
    fs, path = filesystem_and_path(out if not is_local(out) else local_path(out))
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        raise OutputError(f"output {out} is an existing file, not a folder; choose another --out")
    if info.type == pafs.FileType.Directory:
        entries = fs.get_file_info(pafs.FileSelector(path))
        ours = any(e.base_name == SUCCESS_MARKER for e in entries)
        if entries and not ours:
            raise OutputError(
                f"output {out} already exists and was not written by crops-ray (no {SUCCESS_MARKER} marker); "
                f"it would be replaced. Choose another --out, or move that folder away yourself."
            )


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


class Output:
    """``with Output(uri, inputs=[...]) as root: ...`` writes under ``root``; on success it becomes ``uri``.

    ``inputs`` are the folders and files the stage reads: see :func:`check_output`, called before anything is
    written or deleted.
    """

    def __init__(self, uri: str, inputs=()):
        self.local = is_local(uri)
        self.uri = (local_path(uri) if self.local else uri).rstrip("/")
        self.inputs = list(inputs)
        self.root = f"{self.uri}.tmp-{os.getpid()}"

    def __enter__(self) -> str:
        check_output(self.uri, self.inputs)
        if self.local:
            shutil.rmtree(self.root, ignore_errors=True)
            os.makedirs(self.root)
        else:
            fs, path = filesystem_and_path(self.root)
            if fs.get_file_info(path).type != pafs.FileType.NotFound:
                fs.delete_dir(path)
            fs.create_dir(path)
        return self.root

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            if self.local:
                shutil.rmtree(self.root, ignore_errors=True)
            else:
                fs, path = filesystem_and_path(self.root)
                fs.delete_dir(path)
            return
        if self.local:
            write_bytes(join(self.root, SUCCESS_MARKER), b"")
            # Move the old output aside before the swap, so there is never a moment without one.
            old = f"{self.uri}.old-{os.getpid()}"
            if os.path.exists(self.uri):
                os.replace(self.uri, old)
            os.replace(self.root, self.uri)
            shutil.rmtree(old, ignore_errors=True)
        else:
            # No atomic rename on object stores: the new output is complete under root before the old one goes.
            fs, path = filesystem_and_path(self.uri)
            _, root = filesystem_and_path(self.root)
            if fs.get_file_info(path).type != pafs.FileType.NotFound:
                fs.delete_dir(path)
            fs.create_dir(path, recursive=True)
            pafs.copy_files(root, path, source_filesystem=fs, destination_filesystem=fs)
            fs.delete_dir(root)
            write_bytes(join(self.uri, SUCCESS_MARKER), b"")


def makedirs(uri: str) -> None:
    fs, path = filesystem_and_path(uri)
    fs.create_dir(path, recursive=True)


def write_table(table: pa.Table, uri: str) -> None:
    fs, path = filesystem_and_path(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fs)


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem_and_path(uri)
    with fs.open_output_stream(path) as f:
        f.write(data)


def parquet_files(folder: str) -> list[str]:
    """The parquet files directly under ``folder`` (sorted), or [] when it does not exist."""
    fs, path = filesystem_and_path(folder)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    prefix = folder.split("://", 1)[0] + "://" if "://" in folder else ""
    infos = fs.get_file_info(pafs.FileSelector(path))
    return sorted(prefix + i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))


def read_table(uri_or_files, columns: list[str] | None = None) -> pa.Table:
    files = [uri_or_files] if isinstance(uri_or_files, str) else list(uri_or_files)
    tables = []
    for f in files:
        fs, path = filesystem_and_path(f)
        tables.append(pq.read_table(path, filesystem=fs, columns=columns))
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


@contextmanager
def key_lock(path: str):
    """An exclusive lock for ``path`` as long as the block runs: one process fills a cache entry while another run
    that wants the same entry waits, then finds it filled (POSIX advisory lock, released on exit). The lock file
    lives in ``.locks/`` beside the entry, so a cache folder lists its entries only."""
    import fcntl

    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(os.path.join(folder, ".locks"), exist_ok=True)
    with open(os.path.join(folder, ".locks", f"{name}.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
