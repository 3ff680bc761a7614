"""Writing output files: checked before any work, atomic, and with the user's umask.

Every file the library writes goes through :func:`atomic_savez` (or is checked first by
:func:`check_output_file`): a temporary file in the target's directory, renamed over the
target once complete, with mode ``0o666 & ~umask`` like a file made by ``open`` (a bare
:func:`tempfile.mkstemp` would leave it ``0o600``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from reference.errors import ModelError, OutputError

__all__ = [
    "atomic_savez",
    "check_output_dir",
    "check_output_file",
    "current_umask",
    "npz_signature_problem",
]


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux
    ``/proc/self/status``); elsewhere set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output_file(
    path: str | os.PathLike[str], argument: str, error: type[ModelError] = OutputError
) -> Path:
    """``path`` as a :class:`Path` whose directory exists and is writable and which is not a
    directory itself; otherwise ``error`` naming ``argument`` and the path."""
    target = Path(path)
    where = f"{argument} {os.fspath(path)!r}"
    if target.is_dir():
        raise error(f"{where} is a directory, expected a file name")
    parent = target.parent
    if not parent.is_dir():
        raise error(f"{where}: the directory {os.fspath(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"{where}: the directory {os.fspath(parent)!r} is not writable")
    return target


def check_output_dir(
    path: str | os.PathLike[str], argument: str, error: type[ModelError] = OutputError
) -> Path:
    """Create directory ``path`` (and its parents) if needed and check that files can be made
    in it; otherwise ``error`` naming ``argument`` and the path."""
    target = Path(path)
    where = f"{argument} {os.fspath(path)!r}"
    if target.exists() and not target.is_dir():
        raise error(f"{where} exists and is not a directory")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"{where}: cannot create the directory ({exc.strerror})") from None
    if not os.access(target, os.W_OK | os.X_OK):
        raise error(f"{where}: the directory is not writable")
    return target


def atomic_savez(
    path: str | os.PathLike[str],
    fields: dict[str, npt.NDArray[Any]],
    argument: str = "path",
    error: type[ModelError] = OutputError,
) -> None:
    """Write ``fields`` with :func:`numpy.savez` to exactly ``path``, atomically, with mode
    ``0o666 & ~umask``; a bad destination raises ``error`` naming ``argument`` and ``path``
    (never the temporary file)."""
    target = check_output_file(path, argument, error)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".marl-oracle-", suffix=".npz", dir=target.parent)
    except OSError as exc:
        raise error(f"{argument} {os.fspath(path)!r}: cannot write ({exc.strerror})") from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **fields)  # type: ignore[arg-type]
        os.replace(tmp, target)
    except BaseException:  # an I/O failure midway (a full disk) stays an OSError
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive
_NPY_SIGNATURE = b"\x93NUMPY"


def npz_signature_problem(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with the first bytes of a would-be ``.npz`` file, or ``None`` when it
    starts like a zip archive.

    Checked before :func:`numpy.load`, which reads any file that is neither a zip archive nor
    an ``.npy`` array as a pickle and so calls random bytes "pickled (object) data".
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if head.startswith(_ZIP_SIGNATURES):
        return None
    if head.startswith(_NPY_SIGNATURE):
        return "is a single .npy array, expected an .npz archive"
    if not head:
        return "is empty, expected an .npz archive"
    return f"is not an .npz archive (it starts with {head[:4]!r}, not a zip signature)"
