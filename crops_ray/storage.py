"""Output folders on any filesystem pyarrow writes (local, s3://, gs://), replaced whole or not at all.

On a local disk a stage writes into ``OUT.tmp-<pid>`` and renames it over ``OUT`` at the end, so a run that
is interrupted half-way leaves the previous output intact. Object stores have no atomic rename: there the
old output is deleted first and the stage writes in place, ending with a ``_SUCCESS`` marker that readers
can check.
"""

from __future__ import annotations

import os
import shutil

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from crops_ray.schema import filesystem_and_path

SUCCESS_MARKER = "_SUCCESS"


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


class Output:
    """``with Output(uri) as root: ...`` writes under ``root``; on success it becomes ``uri``."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.local = is_local(self.uri)
        self.root = f"{self.uri}.tmp-{os.getpid()}" if self.local else self.uri

    def __enter__(self) -> str:
        if self.local:
            shutil.rmtree(self.root, ignore_errors=True)
            os.makedirs(self.root)
        else:
            fs, path = filesystem_and_path(self.uri)
            if fs.get_file_info(path).type != pafs.FileType.NotFound:
                fs.delete_dir(path)
            fs.create_dir(path)
        return self.root

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            if self.local:
                shutil.rmtree(self.root, ignore_errors=True)
            return
        write_bytes(join(self.root, SUCCESS_MARKER), b"")
        if self.local:
            # Move the old output aside before the swap, so there is never a moment without one.
            old = f"{self.uri}.old-{os.getpid()}"
            if os.path.exists(self.uri):
                os.replace(self.uri, old)
            os.replace(self.root, self.uri)
            shutil.rmtree(old, ignore_errors=True)


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
