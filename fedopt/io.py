"""Small I/O helpers: atomic writes (nothing half-written) and explicit complex-array encoding."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from fedopt.errors import FedOptError

__all__ = ["atomic_write_text", "atomic_write_bytes", "atomic_savez", "encode_array",
           "decode_array", "ensure_dir", "check_npz", "NPZ_ERRORS", "MAX_NPZ_ENTRIES"]

#: what reading a damaged .npz can raise (truncated, not a zip, a .npy named .npz, bad header)
NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, IndexError, zipfile.BadZipFile)
#: entries of all arrays of one .npz file together, checked from the headers before reading
MAX_NPZ_ENTRIES = 2**27


def _umask() -> int:
    """The process's umask (read without changing it where /proc tells it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def _check_dir(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise FedOptError(f"output directory {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise FedOptError(f"output directory {str(parent)!r} is not writable")


def ensure_dir(path: str | os.PathLike, name: str = "out_dir") -> Path:
    """Create the output directory ``path`` if needed and check that it is writable.

    Raises
    ------
    InvalidArgumentError
        Naming ``name`` and the path: it exists and is not a directory, cannot be created, or
        is not writable.
    """
    from fedopt.errors import InvalidArgumentError

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(
            f"{name}: {str(out)!r} exists and is not a directory; pass a directory path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgumentError(
            f"{name}: cannot create the directory {str(out)!r} ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"{name}: the directory {str(out)!r} is not writable")
    return out


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    A reader never sees a half-written file, and a crash leaves the old file intact.
    """
    path = Path(path)
    _check_dir(path)
    if path.is_dir():
        raise FedOptError(f"{str(path)!r} is a directory; give the path of a file to write")
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a file gets the umask's mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomic text write (UTF-8); see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_savez(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Save arrays as an uncompressed ``.npz`` atomically (arrays only: no object dtype)."""
    import io

    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise FedOptError(f"refusing to save object array {key!r}: .npz holds plain arrays")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """JSON-safe encoding of a real or complex array: ``{"dtype", "shape", "real", "imag"}``.

    Floats are written with ``repr`` precision by the json module, so decoding is exact.
    """
    a = np.asarray(a)
    out: dict[str, Any] = {"dtype": str(a.dtype), "shape": list(a.shape),
                           "real": np.real(a).ravel().tolist()}
    if np.iscomplexobj(a):
        out["imag"] = np.imag(a).ravel().tolist()
    return out


def decode_array(d: Any, name: str = "array") -> np.ndarray:
    """Inverse of :func:`encode_array`, with checks that name the field."""
    if not isinstance(d, dict) or "shape" not in d or "real" not in d:
        raise FedOptError(f"{name}: expected an encoded array with keys shape, real[, imag]")
    shape = tuple(int(s) for s in d["shape"])
    real = np.asarray(d["real"], dtype=float)
    if real.size != int(np.prod(shape)):
        raise FedOptError(f"{name}: {real.size} values do not fill shape {shape}")
    if "imag" in d:
        imag = np.asarray(d["imag"], dtype=float)
        if imag.size != real.size:
            raise FedOptError(f"{name}: real and imag parts differ in size")
        return (real + 1j * imag).reshape(shape)
    return real.reshape(shape)


def check_npz(path: str | os.PathLike, max_entries: int = MAX_NPZ_ENTRIES) -> dict[str, tuple]:
    """The (shape, dtype) of each array of an ``.npz`` file, read from the headers only, so an
    archive whose header claims a huge array is refused before anything is allocated.

    Raises
    ------
    FedOptError
        Not a zip archive of ``.npy`` members, a member without a readable header, or more
        than ``max_entries`` entries in all (the message names the file and the limit).
    """
    path = Path(path)
    out: dict[str, tuple] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                    else:
                        raise ValueError(f"npy format version {version} is not read")
                out[info.filename.removesuffix(".npy")] = (shape, dtype)
    except NPZ_ERRORS as exc:
        raise FedOptError(f"{path}: not a readable .npz file ({type(exc).__name__}: "
                          f"{str(exc)[:100]})") from None
    total = sum(int(np.prod(shape, dtype=object)) for shape, _ in out.values())
    if total > max_entries:
        raise FedOptError(f"{path}: its arrays claim {total} entries; at most {max_entries} "
                          "are read")
    return out
