"""Output folders on any filesystem pyarrow writes (local, s3://, gs://), replaced whole or not at all.

On a local disk a stage writes into ``OUT.tmp-<pid>`` and swaps it with ``OUT`` at the end in one atomic step
(Linux ``renameat2`` with ``RENAME_EXCHANGE``), so a run that is interrupted half-way leaves the previous output
intact and a reader finds the old output or the new one, never none. Where the system cannot swap (not Linux, or
a filesystem without the exchange) the old output is renamed aside first: between that rename and the next there is
a moment with no ``OUT`` at all, though never a half-written one. Object stores have no atomic rename: there the stage
writes into ``OUT.tmp-<pid>`` too and, once that is complete, the old output is deleted and the new one copied
in place; readers check the ``_SUCCESS`` marker, written last.

An output never destroys an input: :func:`check_output` refuses an ``OUT`` that is, contains or lies inside
one of the stage's inputs, and an existing ``OUT`` that crops-ray did not write (no ``_SUCCESS`` marker) is
refused rather than emptied.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import time
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from crops_ray.schema import filesystem_and_path

SUCCESS_MARKER = "_SUCCESS"
# A cache fill (a corpus encoded on CPUs, a discriminator fine-tuned) takes minutes to an hour or two: a run that
# still holds an entry's lock after this long is taken as hung, and the run waiting for it stops with the reason.
LOCK_TIMEOUT_S = 4 * 3600
LOCK_POLL_S = 0.5
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


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
            if os.path.lexists(self.uri) and exchange_paths(self.root, self.uri):
                shutil.rmtree(self.root, ignore_errors=True)  # root holds the old output now
                return
            # No atomic swap here: the old output goes aside, then the new one in (a moment with no output between).
            old = f"{self.uri}.old-{os.getpid()}"
            if os.path.lexists(self.uri):
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


def exchange_paths(a: str, b: str) -> bool:
    """Swap two existing local paths in one atomic step; False where this system or filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc 2.28+
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the kernel or the filesystem has no exchange
        return False
    raise OSError(err, os.strerror(err), a, None, b)


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


class LockTimeout(TimeoutError):
    """Another run has held a cache entry's lock for longer than a fill takes."""


@contextmanager
def key_lock(path: str, timeout_s: float = LOCK_TIMEOUT_S):
    """An exclusive lock for ``path`` as long as the block runs: one process fills a cache entry while another run
    that wants the same entry waits, then finds it filled (POSIX advisory lock, released on exit, even a crash).
    The lock file lives in ``.locks/`` beside the entry, so a cache folder lists its entries only; it holds the
    holder's pid. A run that waits longer than ``timeout_s`` raises :class:`LockTimeout` naming the lock file."""
    import fcntl

    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(os.path.join(folder, ".locks"), exist_ok=True)
    lock_file = os.path.join(folder, ".locks", f"{name}.lock")
    with open(lock_file, "a+") as f:  # not "w": a waiter must not erase the holder's pid
        _acquire(f, lock_file, path, timeout_s)
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _acquire(f, lock_file: str, path: str, timeout_s: float) -> None:
    import fcntl

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(LOCK_POLL_S, left))
    f.seek(0)
    holder = f.read().strip() or "unknown"
    raise LockTimeout(
        f"waited {timeout_s:g} s for the lock {lock_file}: another run (pid {holder}) is still filling {path}. "
        f"If that run is hung, stop it (its lock is released when its process exits) and run again; if it is "
        f"still working, let it finish and run again, and its entry will be reused."
    )
