"""Shared file helpers: atomic writes, checksums, settings records.

Every output of dynmass is written to a temporary file beside its destination and renamed into
place only when complete (``os.replace`` is atomic on POSIX), so an interrupted run never leaves
a half file that looks whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dynmass.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    On an exception the temporary file is removed and ``path`` is left untouched.

    Parameters
    ----------
    path : str or os.PathLike
        Final destination.

    Yields
    ------
    pathlib.Path
        Temporary file to write to (it does not exist yet).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with contextlib.suppress(OSError):
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file (its folder is created if missing).
    text : str
        Content, written in the default encoding.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file (its folder is created if missing).
    obj : object
        JSON-able value; numpy scalars and arrays and paths are converted. Keys are sorted and
        the file ends with a newline.
    """
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any) -> str:
    """Serialise ``obj`` (numpy scalars and arrays allowed) to a JSON string."""
    return json.dumps(obj, sort_keys=True, default=_json_default)


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file's bytes.

    Parameters
    ----------
    path : str or os.PathLike
        File to hash.
    chunk_bytes : int
        Bytes read at a time (4 MiB by default).

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


#: The command being run, when the CLI knows it better than ``sys.argv`` (``main(argv)``
#: called from Python, e.g. by ``dynmass reproduce`` or a notebook); see :func:`recorded_command`.
_COMMAND: list[str] | None = None


@contextlib.contextmanager
def recorded_command(argv: list[str]) -> Iterator[None]:
    """Within the block, :func:`provenance` records ``argv`` as the command.

    Parameters
    ----------
    argv : list of str
        The command line, e.g. ``["dynmass", "observe", "u.h5", "-o", "obs.h5"]``.
    """
    global _COMMAND
    previous, _COMMAND = _COMMAND, [str(a) for a in argv]
    try:
        yield
    finally:
        _COMMAND = previous


def provenance() -> dict[str, Any]:
    """Settings record common to every output: version, command line, time, Python."""
    import shlex

    from dynmass import __version__

    return {
        "dynmass_version": __version__,
        "command": shlex.join(_COMMAND) if _COMMAND is not None else " ".join(sys.argv),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
    }


def open_hdf5(path: str | os.PathLike, kind: str | None = None) -> h5py.File:
    """Open an HDF5 file for reading with a clear error for missing, truncated or foreign files.

    Parameters
    ----------
    path : str or os.PathLike
        File to open.
    kind : str, optional
        Expected value of the root attribute ``dynmass_kind`` (e.g. ``"catalog"``,
        ``"observations"``, ``"model"``). ``None`` accepts any HDF5 file.

    Returns
    -------
    h5py.File
        The open file (read-only).

    Raises
    ------
    InputError
        If the file does not exist, is not HDF5 (or is truncated), or is of another kind.
    """
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", path=p)
    try:
        fh = h5py.File(p, "r")
    except OSError as exc:
        raise InputError(f"not a readable HDF5 file (truncated or foreign?): {exc}", path=p) from exc
    if kind is not None:
        found = fh.attrs.get("dynmass_kind")
        if isinstance(found, bytes):
            found = found.decode()
        if found != kind:
            fh.close()
            raise InputError(
                f"expected a dynmass {kind} file, found dynmass_kind={found!r}", path=p
            )
    return fh


#: Exceptions h5py raises on damaged content (bad signatures, addresses past the end of the
#: file, unreadable attributes or chunks, names decoded as bytes) once a file has opened.
HDF5_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError, RuntimeError, KeyError, ValueError, TypeError,
)


@contextlib.contextmanager
def hdf5_read_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn h5py's errors on damaged content inside the block into :class:`InputError`.

    A file whose header opens may still be corrupted further in; h5py then raises
    ``OSError``, ``RuntimeError``, ``KeyError``, ``ValueError`` or ``TypeError`` while reading. This context
    re-raises those as an :class:`InputError` naming ``path`` (an :class:`InputError` raised in
    the block passes unchanged).

    Parameters
    ----------
    path : str or os.PathLike
        The file being read, named in the message.
    """
    try:
        yield
    except InputError:
        raise
    except HDF5_READ_ERRORS as exc:
        raise InputError(
            f"damaged or unreadable HDF5 content (corrupted or truncated file?): "
            f"{type(exc).__name__}: {exc}",
            path=path,
        ) from exc


def read_json_attr(fh: h5py.File | h5py.Group, name: str, path: object = None) -> Any:
    """Read a JSON-encoded attribute; a clear error names the file and attribute when absent.

    Parameters
    ----------
    fh : h5py.File or h5py.Group
        Open HDF5 file or group holding the attribute.
    name : str
        Attribute name.
    path : str or os.PathLike, optional
        File name for error messages (default: ``fh``'s file name).

    Returns
    -------
    object
        The decoded JSON value.

    Raises
    ------
    InputError
        The attribute is missing or not valid JSON.
    """
    if name not in fh.attrs:
        raise InputError(f"missing root attribute '{name}'", path=path or fh.file.filename)
    raw = fh.attrs[name]
    if isinstance(raw, bytes):
        raw = raw.decode()
    try:
        return json.loads(raw)
    except (TypeError, json.JSONDecodeError) as exc:
        raise InputError(f"attribute '{name}' is not valid JSON", path=path or fh.file.filename) from exc
