"""Over-the-air aggregation with ZF precoders over MIMO-OFDM (spec 05 §3 ``aircomp``, spec 02).

Per round a channel H, receive beamformers A (supplied by a callable, so that the caller may
re-optimize them with a warm start; fedopt never imports solvers here), ZF precoders at the
power limit, and either the symbol-level simulation (``mode="exact"``) or only its
receiver-noise error A_m^H n, unpacked as :func:`fedopt.aircomp.pack` lays the reals
(``mode="equivalent"``).

Public through :mod:`fedopt.fl.aggregators`. This module needs numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from fedopt import aircomp as ac
from fedopt.errors import InvalidArgumentError
from fedopt.fl.aggregators.base import (
    AggregationResult,
    callable_name,
    check_inputs,
    weighted_average,
)

__all__ = ["MODES", "AirCompAggregator"]

MODES = ("exact", "equivalent")


class AirCompAggregator:
    """Over-the-air aggregation with ZF precoders over MIMO-OFDM (spec 05 §3 ``aircomp``).

    Parameters
    ----------
    H_for_round
        ``H_for_round(t)`` → this round's channel, complex (K, M, N_r, N_t).
    beamformers_for_round
        ``beamformers_for_round(t, H)`` → receive beamformers A, complex (M, N_r, L), any scale
        (ZF design rescales each A_m to the power limit).
    p_sub
        Per-subcarrier power budgets P_{k,m}, shape (K,) or (K, M).
    sigma2
        Noise power per subcarrier σ² (watts), >= 0.
    symbol_time_s
        OFDM symbol duration; if given, ``airtime_s = S · symbol_time_s``.
    mode
        ``"exact"``: symbol-level simulation (pack, precode, channel, noise, receive, unpack).
        ``"equivalent"``: the same normalization, the exact weighted sum, plus the receiver-noise
        error A_m^H n (n ~ CN(0, σ² I)) unpacked as ``pack`` lays the reals — what the exact
        path's error is under ZF (per-slot variance MSE_{m,l} = σ²‖a_{m,l}‖², with the
        correlation between the streams of a subcarrier), without simulating the K devices.
    compute_time_s
        Local compute time of the slowest device; with ``symbol_time_s`` it makes
        ``latency_s = compute_time_s + airtime_s``.
    blocks
        Equal parts of each update normalized on their own (each with its own common (μ_j,
        v_j)) and sent back to back in one transmission: over-the-air Sophia's m and h, whose
        scales differ by orders of magnitude, so that one normalization would bury m's
        entries or h's. 1 (the default) is the whole update as one block.

    The result's ``energy_j`` is S · T_sym · Σ_m ‖B_{k,m}‖_F² per device (unit-power symbols).
    If ``beamformers_for_round`` has ``state_dict``/``load_state_dict`` (a warm start), the
    aggregator exposes them too, so the loop checkpoints that state.
    """

    def __init__(self, H_for_round: Callable[[int], np.ndarray],
                 beamformers_for_round: Callable[[int, np.ndarray], np.ndarray],
                 p_sub: np.ndarray, sigma2: float, *, symbol_time_s: float | None = None,
                 mode: str = "exact", compute_time_s: float = 0.0, blocks: int = 1):
        if not callable(H_for_round):
            raise InvalidArgumentError("H_for_round: expected a callable round -> H")
        if not callable(beamformers_for_round):
            raise InvalidArgumentError(
                "beamformers_for_round: expected a callable (round, H) -> A"
            )
        if mode not in MODES:
            raise InvalidArgumentError(f"mode: expected one of {MODES}, got {mode!r}")
        p = np.asarray(p_sub, dtype=float)
        if p.ndim not in (1, 2) or p.size == 0 or not np.all(np.isfinite(p)) or np.any(p <= 0):
            raise InvalidArgumentError(
                f"p_sub: expected positive finite budgets of shape (K,) or (K, M), got shape "
                f"{p.shape}"
            )
        s2 = float(sigma2)
        if not np.isfinite(s2) or s2 < 0:
            raise InvalidArgumentError(f"sigma2: expected a finite noise power >= 0, got {sigma2}")
        if symbol_time_s is not None:
            ts = float(symbol_time_s)
            if not np.isfinite(ts) or ts <= 0:
                raise InvalidArgumentError(
                    f"symbol_time_s: expected a positive duration or None, got {symbol_time_s}"
                )
            symbol_time_s = ts
        ct = float(compute_time_s)
        if not np.isfinite(ct) or ct < 0:
            raise InvalidArgumentError(
                f"compute_time_s: expected a finite time >= 0, got {compute_time_s}"
            )
        if isinstance(blocks, bool) or not isinstance(blocks, (int, np.integer)) or blocks < 1:
            raise InvalidArgumentError(f"blocks: got {blocks!r}, must be an integer >= 1")
        self.blocks = int(blocks)
        self.H_for_round = H_for_round
        self.beamformers_for_round = beamformers_for_round
        self.p_sub = p
        self.sigma2 = s2
        self.symbol_time_s = symbol_time_s
        self.mode = mode
        self.compute_time_s = ct

    def describe(self) -> dict[str, Any]:
        """JSON-safe description (part of a run's configuration digest)."""
        inner = getattr(self.beamformers_for_round, "describe", None)
        return {"type": "aircomp", "mode": self.mode, "sigma2": self.sigma2,
                **({"blocks": self.blocks} if self.blocks > 1 else {}),
                "symbol_time_s": self.symbol_time_s, "compute_time_s": self.compute_time_s,
                "p_sub": self.p_sub.tolist(),
                "beamformers": inner() if callable(inner) else callable_name(
                    self.beamformers_for_round)}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The beamformer callable's state (empty when it has none)."""
        fn = getattr(self.beamformers_for_round, "state_dict", None)
        return dict(fn()) if callable(fn) else {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        fn = getattr(self.beamformers_for_round, "load_state_dict", None)
        if callable(fn):
            fn(state)

    def _round_design(self, t: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        H = np.asarray(self.H_for_round(t))
        if H.ndim != 4 or H.shape[0] != k:
            raise InvalidArgumentError(
                f"H_for_round({t}): expected shape ({k}, M, N_r, N_t) for K = {k} updates, "
                f"got {H.shape}"
            )
        A = np.asarray(self.beamformers_for_round(t, H))
        m, nr = H.shape[1], H.shape[2]
        if A.ndim != 3 or A.shape[:2] != (m, nr):
            raise InvalidArgumentError(
                f"beamformers_for_round({t}): expected shape ({m}, {nr}, L), got {A.shape}"
            )
        p = self.p_sub
        if p.shape[0] != k or (p.ndim == 2 and p.shape[1] != m):
            raise InvalidArgumentError(
                f"p_sub: expected shape ({k},) or ({k}, {m}), got {p.shape}"
            )
        return H, A

    def _equivalent(self, g: np.ndarray, phi: np.ndarray, a_s: np.ndarray, n_rx: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, float, float, int]:
        """``mode="equivalent"``: (ĝ, mean μ, scale v, symbol count S) without simulating the
        devices — the exact normalized sum plus the receiver-noise error A_m^H n."""
        q = g.shape[1]
        m, lsz = a_s.shape[0], a_s.shape[2]
        mu = float(np.mean(g))
        v = float(np.std(g))
        v = v if v > 0 else 1.0
        x_sum = phi @ ((g - mu) / v)
        s_count = max(1, ac.symbol_count(q, m, lsz))
        # under ZF the received error is exactly A_m^H n: draw n and form it, which keeps the
        # correlation between streams of one subcarrier (Re a_l^H a_l' / (‖a_l‖‖a_l'‖))
        # that independent per-slot draws of variance σ²‖a_l‖² would lose
        n = rng.standard_normal((s_count, m, n_rx, 2)) @ np.array([1.0, 1j])
        eps = np.einsum("mrl,smr->sml", np.conj(a_s), np.sqrt(self.sigma2 / 2.0) * n)
        x_hat = x_sum + ac.unpack(eps, q)
        return v * x_hat / float(phi.sum()) + mu, mu, v, s_count

    def _block_normalize(self, g: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(x, μ_j, v_j): each of the ``blocks`` parts of g normalized to zero mean and unit
        variance over its entries (g itself and None, None for one block with a spread). A block
        whose entries are all equal (v_j = 0: e.g. FedSA's first update of A, exactly zero while
        every B is zero) carries no information: it is sent as zeros and received as μ_j
        exactly, as a receiver that knows the broadcast (μ_j, v_j) would."""
        if self.blocks == 1 and np.std(g) > 0:
            return g, None, None
        k, q = g.shape
        if q % self.blocks:
            raise InvalidArgumentError(
                f"updates: {q} reals per device do not split into blocks = {self.blocks} equal "
                f"parts")
        parts = g.reshape(k, self.blocks, q // self.blocks)
        mu = parts.mean(axis=(0, 2))
        v = parts.std(axis=(0, 2))
        safe = np.where(v > 0, v, 1.0)
        return ((parts - mu[None, :, None]) / safe[None, :, None]).reshape(k, q), mu, v

    def aggregate(self, updates: np.ndarray, weights: np.ndarray, round_index: int,
                  rng: np.random.Generator, *, members: Any = None) -> AggregationResult:
        """One round over the air; the receiver noise (both modes) is drawn from ``rng``.

        ``members`` (device indices) restricts the transmission to those devices: the others
        are silent (zero energy), the normalization, ZF design and power scaling are the
        members' alone, and the estimate is the members' φ-weighted average — one time slot
        of a per-cluster aggregation (MIRA). The receive beamformers stay the round's.
        """
        g, phi = check_inputs(updates, weights, round_index)
        k, q = g.shape
        H, A = self._round_design(int(round_index), k)
        if members is not None:
            idx = np.unique(np.asarray(members, dtype=np.int64))
            if idx.size == 0 or idx[0] < 0 or idx[-1] >= k:
                raise InvalidArgumentError(
                    f"members: expected device indices in 0..{k - 1}, got {members!r}")
            res = self._aggregate(g[idx], phi[idx], H[idx], A, self.p_sub[idx], rng)
            if res.energy_j is not None:
                energy = np.zeros(k)
                energy[idx] = res.energy_j
                res = replace(res, energy_j=energy)
            return res
        return self._aggregate(g, phi, H, A, self.p_sub, rng)

    def _aggregate(self, g: np.ndarray, phi: np.ndarray, H: np.ndarray, A: np.ndarray,
                   p_sub: np.ndarray, rng: np.random.Generator) -> AggregationResult:
        q = g.shape[1]
        a_s, B = ac.zf_design(A, H, phi, p_sub)
        lsz = a_s.shape[2]
        mse_ml = ac.mse_per_stream(a_s, B, H, phi, self.sigma2)  # (M, L)
        mse_m = mse_ml.sum(axis=1)
        phi_sum = float(phi.sum())
        exact = weighted_average(g, phi)
        x, mu_b, v_b = self._block_normalize(g)

        if self.mode == "exact":
            out = ac.aggregate(x, a_s, B, H, phi, self.sigma2, rng)
            estimate, mu, v, s_count = out.estimate, out.mean, out.scale, out.n_symbols
        else:
            estimate, mu, v, s_count = self._equivalent(x, phi, a_s, H.shape[2], rng)
        if v_b is not None:  # undo the per-block normalization: ĝ_j = v_j x̂_j + μ_j
            estimate = (estimate.reshape(self.blocks, -1) * v_b[:, None]
                        + mu_b[:, None]).reshape(-1)
            scale2 = float(np.mean((v * v_b) ** 2))
            mu, v = mu_b.tolist(), (v * v_b).tolist()
        else:
            scale2 = v ** 2
        predicted = float(ac.distortion(mse_m, q, lsz, scale=float(np.sqrt(scale2)),
                                        phi_sum=phi_sum))
        airtime = energy = latency = None
        if self.symbol_time_s is not None:
            airtime = s_count * self.symbol_time_s
            latency = self.compute_time_s + airtime
            energy = airtime * np.sum(np.abs(B) ** 2, axis=(1, 2, 3))
        info = {"mode": self.mode, "mean": mu, "scale": v, "n_symbols": int(s_count),
                "mse_per_subcarrier": mse_m, "n_streams": int(lsz)}
        return AggregationResult(
            estimate=estimate,
            exact=exact,
            error=float(np.sum((estimate - exact) ** 2)),
            predicted_error=predicted,
            airtime_s=airtime,
            info=info,
            latency_s=latency,
            energy_j=energy,
        )
