"""The payload of a Flower model as fedopt's aggregators see it: one real vector per client.

A Flower reply carries named arrays (an ``ArrayRecord``, or the classic API's list of NumPy
arrays, named ``"0"``, ``"1"``, ... here). :class:`Layout` fixes the order once — the arrays'
own order in the first reply, each flattened row-major (C order) — so that
:meth:`Layout.flatten` turns every client's arrays into one length-q vector, the rows of the
(K, q) updates of :mod:`fedopt.fl.aggregators`, and :meth:`Layout.unflatten` turns the aggregate
back into arrays of the original shapes and dtypes.

Only floating-point arrays travel over the uplink; any other array (an integer step counter, a
boolean mask) is left to the wrapped strategy, which aggregates it error-free as usual.

This module needs numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError

__all__ = ["Layout", "lora_shapes"]


def _travels(array: np.ndarray) -> bool:
    """Whether an array goes over the uplink: real floating point (float16/32/64)."""
    return np.issubdtype(array.dtype, np.floating)


@dataclass(frozen=True)
class Layout:
    """The fixed order in which named arrays become one real vector.

    Attributes
    ----------
    keys : tuple of str
        Names of the arrays that travel (floating point), in payload order.
    shapes : tuple of tuple of int
        Their shapes.
    dtypes : tuple of numpy.dtype
        Their dtypes (the aggregate is cast back to them).
    """

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> Layout:
        """The layout of ``arrays`` (name → array): its floating-point arrays in its order.

        Raises :class:`~fedopt.errors.InvalidArgumentError` when no array is floating point
        (nothing would travel).
        """
        keys, shapes, dtypes = [], [], []
        for key, value in arrays.items():
            a = np.asarray(value)
            if _travels(a):
                keys.append(str(key))
                shapes.append(tuple(int(n) for n in a.shape))
                dtypes.append(a.dtype)
        if not keys:
            kinds = {str(k): str(np.asarray(v).dtype) for k, v in arrays.items()}
            raise InvalidArgumentError(
                f"arrays: no floating-point array to send over the uplink (got {kinds}); the "
                "model's parameters must be float16, float32 or float64")
        return cls(tuple(keys), tuple(shapes), tuple(dtypes))

    @property
    def size(self) -> int:
        """q: the reals per client."""
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def flatten(self, arrays: Mapping[str, np.ndarray], *, where: str = "arrays") -> np.ndarray:
        """One float64 vector of length :attr:`size` from ``arrays`` (extra non-travelling
        arrays are ignored); ``where`` names the source in errors."""
        parts = []
        for key, shape in zip(self.keys, self.shapes, strict=True):
            if key not in arrays:
                raise InvalidArgumentError(
                    f"{where}: has no array {key!r}; every client must send the arrays "
                    f"{list(self.keys)}")
            a = np.asarray(arrays[key])
            if a.shape != shape:
                raise InvalidArgumentError(
                    f"{where}: array {key!r} has shape {a.shape}, expected {shape} (as the "
                    "other clients and the global model)")
            parts.append(a.astype(np.float64, copy=False).ravel())
        return np.concatenate(parts)

    def unflatten(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """The arrays of a length-:attr:`size` vector, in their shapes and dtypes."""
        v = np.asarray(vector, dtype=np.float64)
        if v.shape != (self.size,):
            raise InvalidArgumentError(
                f"vector: expected shape ({self.size},), got {v.shape}")
        out, off = {}, 0
        for key, shape, dtype in zip(self.keys, self.shapes, self.dtypes, strict=True):
            n = int(np.prod(shape))
            out[key] = v[off:off + n].reshape(shape).astype(dtype)
            off += n
        return out

    def describe(self) -> list[dict[str, Any]]:
        """JSON-safe: one ``{"key", "shape", "dtype"}`` per array."""
        return [{"key": k, "shape": list(s), "dtype": str(d)}
                for k, s, d in zip(self.keys, self.shapes, self.dtypes, strict=True)]


def lora_shapes(layers: Sequence[tuple[int, int]], rank: int, factors: str = "AB"
                ) -> list[tuple[int, int]]:
    """The array shapes of a LoRA payload in fedopt's order (``fedopt.fl.lora.flatten_lora``):
    per layer A (r × d_in) then B (d_out × r), or only the factor that travels."""
    out = []
    for d_out, d_in in layers:
        if "A" in factors:
            out.append((int(rank), int(d_in)))
        if "B" in factors:
            out.append((int(d_out), int(rank)))
    return out
