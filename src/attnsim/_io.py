"""Every file attnsim writes goes through here: atomic (temporary file, fsync, rename, fsync of
the folder), and read back without pickle."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

import numpy as np


#: The first bytes of a zip archive (an ``.npz``): a local file header, or an empty archive.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class ResultFileError(ValueError):
    """A result or checkpoint file is missing, truncated, corrupted or of another format version."""


@contextlib.contextmanager
def _atomic(path, mode):
    """Yield a file object on a temporary file beside ``path``; on success it replaces ``path``
    durably, on any failure it is removed and ``path`` is left as it was."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".attnsim-", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates the file 0600; give it the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        _fsync_folder(folder)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # a write into the open temporary file (a full disk, a quota): name the file it was for
            raise OSError(exc.errno, exc.strerror, path) from exc
        raise


def write_npz_atomic(path, arrays: dict, meta: dict) -> None:
    """Write ``arrays`` plus a JSON ``meta`` record to ``path`` so that ``path`` is either the
    old file or the complete new one, never a partial write."""
    with _atomic(path, "wb") as fh:
        np.savez(fh, __meta__=np.array(json.dumps(meta)), **arrays)


def write_json_atomic(path, obj) -> None:
    """Write ``obj`` as indented JSON to ``path``, atomically like ``write_npz_atomic``."""
    with _atomic(path, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)


def write_csv_atomic(path, header, rows) -> int:
    """Write a CSV file (``header``, then every row of the iterable ``rows``) atomically like
    ``write_npz_atomic``; returns the number of data rows."""
    import csv

    count = 0
    with _atomic(path, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def _fsync_folder(folder) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_npz(path, kind: str, version: int | tuple) -> tuple[dict, dict]:
    """Read a file written by ``write_npz_atomic``; check its kind and format ``version`` (or one of
    a tuple of readable versions).

    Every member is read in full, so zip's CRC-32 check catches flipped bytes.

    Raises
    ------
    ResultFileError
        If the file is missing, not a valid ``.npz``, truncated, of another kind or version.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ResultFileError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ResultFileError(f"{path}: is a folder, expected an .npz file")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not any(magic.startswith(head) for magic in _ZIP_MAGIC):   # a prefix: a truncated zip, said below
        # Otherwise numpy takes it for a pickle and advises allow_pickle=True, which is no fix.
        raise ResultFileError(f"{path}: not an attnsim file (expected an {kind!r} .npz, which is a zip archive; "
                              f"this file starts with {head!r}); pass a file written by attnsim")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as exc:  # noqa: BLE001 - a damaged zip can fail in many ways (zlib, struct, unicode...)
        raise ResultFileError(
            f"{path}: not a readable attnsim file, truncated or corrupted ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:200]})"
        ) from None
    if "__meta__" not in arrays:
        raise ResultFileError(f"{path}: not an attnsim file (no __meta__ record)")
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
    except (json.JSONDecodeError, ValueError) as exc:
        raise ResultFileError(f"{path}: corrupted __meta__ record ({exc})") from None
    if not isinstance(meta, dict):
        raise ResultFileError(f"{path}: corrupted __meta__ record (not a JSON object)")
    if meta.get("kind") != kind:
        raise ResultFileError(f"{path}: holds {meta.get('kind')!r}, expected {kind!r}; pass a file of that kind")
    versions = version if isinstance(version, tuple) else (version,)
    if meta.get("format_version") not in versions:
        raise ResultFileError(
            f"{path}: format_version {meta.get('format_version')!r} is not supported "
            f"(this attnsim reads version {' and '.join(map(str, versions))}); use the attnsim version that wrote it"
        )
    for name, arr in arrays.items():
        if arr.dtype.hasobject:  # unreachable with allow_pickle=False, kept as a guard
            raise ResultFileError(f"{path}: array {name!r} holds Python objects")
    return arrays, meta


def append_json_line(path, obj) -> None:
    """Append ``obj`` to the JSON-lines file ``path`` (created if missing) in one write, then fsync.

    A crash can tear at most the line being written, and only at the end of the file. A torn
    last line left by an earlier crash is closed with a newline first, so that it stays one
    unreadable line and never swallows the new one (readers skip lines that do not parse).
    """
    data = (json.dumps(obj, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(os.fspath(path), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        if os.fstat(fd).st_size > 0:
            os.lseek(fd, -1, os.SEEK_END)
            if os.read(fd, 1) != b"\n":
                data = b"\n" + data
        view = memoryview(data)
        while view:   # one write() for a line this short; the loop only guards against a partial one
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
