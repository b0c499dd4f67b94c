"""Branch-and-bound certificate for single-group multicast beamforming with single-antenna
devices (L = 1, N_t = 1): phase-arc branching after Lu & Liu (2017), with Lagrangian-enhanced
node bounds.

Per subcarrier, with the scaled channels g_k of :func:`.multicast.scaled_channels`,

    v* = min { ‖a‖² : |z_k| ≥ 1 ∀k },   z_k = g_kᴴ a,   f* = σ² v* / s².

a ∈ span{g_k} at the optimum, so a = U c with w = U T (thin QR) and z = Tᴴ c, c ∈ C^r,
r = min(N_r, K). The common phase is free: arg z_1 = 0. A node fixes arcs arg z_k ∈ [l_k, u_k]
(k ≥ 2; [−π, π) at the root). For an arc of half width δ ≤ π/2 and centre θ the convex hull of
{|z| ≥ 1, arg z ∈ [l, u]} is the cone (two half-planes through 0) cut by the chord
Re(z e^{−jθ}) ≥ cos δ; an arc wider than π puts no constraint. The node's relaxation is the
least-distance problem min ‖x‖² s.t. A x ≥ b (x = [Re c; Im c]).

**Bounds, valid whatever the numerics.** Weak duality: for every λ ≥ 0,
min{‖x‖² : Ax ≥ b} ≥ max_s≥0 (s bᵀλ − s²‖Aᵀλ‖²/4) = (bᵀλ)₊² / ‖Aᵀλ‖². λ comes from NNLS (the
Lawson–Hanson reduction of least-distance programming), but the bound is this expression
evaluated at the λ returned — an approximate λ loses tightness, never validity — with rounding
margins on the numerator and denominator. The Lagrangian bound: for μ ≥ 0 with
P = I − Σ μ_k t_k t_kᴴ ≻ 0, on the node's region ‖c‖² = cᴴPc + Σ μ_k |z_k|² ≥ cᴴPc + Σ μ, and
min {cᴴPc : c in the polyhedron} is again a least-distance problem, in w = Cᴴc (P = CCᴴ), with
channels C⁻¹T; its bound holds for every such μ. The root's μ is 0.99 y (y the SDR-dual
multipliers of fedopt's barrier method, scaled to λ_max(Σ y_k g_k g_kᴴ) = 1: about the SDR
bound); each node starts from its parent's μ and takes a few projected supergradient steps
(∂/∂μ_k = 1 − |z_k|² at the minimizer), kept while they raise the bound, so μ adapts down the
tree. A node's bound is the largest of the plain arc bound, the Lagrangian one, its parent's
and the SDR-dual bound Σ y (P(y) ⪰ 0, so Σ y bounds every node).

**Search.** Best first on the bound. The node is branched on the device whose relaxed z_k (plain
relaxation) violates |z_k| ≥ 1 most: a full circle is cut into four arcs of width π/2 that
start at arg z_k, an arc of width ≤ π in two at arg z_k (at the midpoint when arg z_k is within
a quarter width of an end); z_k is cut off in both children. Every relaxed point, scaled to
min_k |z_k| = 1, is feasible and updates the incumbent, polished by fixed-phase QPs (the same
least-distance problem with the chords Re(z_k e^{−j arg z_k}) ≥ 1). The global lower bound is the
least bound of the open nodes (or the incumbent, if smaller), valid whenever the search stops.
"""

from __future__ import annotations

import heapq
import time

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.solvers.beamforming.multicast import scaled_channels
from fedopt.solvers.beamforming.problem import BeamformingProblem
from fedopt.solvers.beamforming.sdr_dual import _barrier_path

__all__ = ["certify_multicast"]

_EPS = np.finfo(float).eps
#: relative margin taken off every returned lower bound (covers the rounding of the QR reduction
#: and of the channel scaling, ~1e-15 relative)
_SAFETY = 1e-9
_TOP = 0.99  # λ_max(Σ μ_k t_k t_kᴴ) of the Lagrangian bounds (P ⪰ (1 − _TOP) I)


def _rows(t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (m, 2r) and right-hand sides (m,) of the node's hull constraints
    Re(e^{−jφ} z_k) ≥ β for the channels t (r, K) and arcs [lo, hi]."""
    width = hi - lo
    on = np.flatnonzero(width <= np.pi + 1e-12)
    lo_, hi_ = lo[on], hi[on]
    phi = np.concatenate([lo_ + np.pi / 2, hi_ - np.pi / 2, 0.5 * (lo_ + hi_)])
    beta = np.concatenate([np.zeros(2 * on.size), np.cos(0.5 * (hi_ - lo_))])
    u = t[:, np.tile(on, 3)] * np.exp(1j * phi)  # Re(e^{−jφ} tᴴc) = Re((e^{jφ} t)ᴴ c)
    return np.concatenate([u.real, u.imag]).T, beta


def _ldp(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray | None]:
    """A valid lower bound on min {‖x‖² : a x ≥ b} and the (approximate) minimizer, from the
    NNLS reduction (Lawson & Hanson, ch. 23) and weak duality (module notes)."""
    n = a.shape[1]
    if b.size == 0 or not np.any(b > 0):
        return 0.0, np.zeros(n)
    e = np.vstack([a.T, b[None, :]])
    f = np.zeros(n + 1)
    f[-1] = 1.0
    from scipy.optimize import nnls  # here: scipy.optimize costs 0.5 s to import, the planner
    # never needs it
    try:
        lam, _ = nnls(e, f, maxiter=50 * e.shape[1])
    except RuntimeError:  # no NNLS convergence: any λ ≥ 0 is still a bound
        lam = np.zeros(b.size)
    atl = a.T @ lam
    num = float(b @ lam) ** 2 * (1.0 - 8 * _EPS * b.size)
    # |fl(Aᵀλ) − Aᵀλ| ≤ m·eps·|A|ᵀλ per entry: inflate the denominator by that much
    err = b.size * 4 * _EPS * float(np.linalg.norm(np.abs(a.T) @ lam))
    den = (float(np.linalg.norm(atl)) + err) ** 2
    if float(b @ lam) <= 0:
        return 0.0, None
    if den <= 0:
        return np.inf, None
    return num / den, atl * (float(b @ lam) / float(atl @ atl)) if atl @ atl > 0 else None


class _Relaxation:
    """Node bounds of one subcarrier: the plain arc relaxation and the Lagrangian ones."""

    def __init__(self, t: np.ndarray, eta: float) -> None:
        self.t, self.eta = t, eta

    def lagrangian(self, lo, hi, mu: np.ndarray) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Σμ + min {cᴴP(μ)c : c in the node's polyhedron} (a valid bound, module notes) with
        μ scaled down if needed to λ_max(Σ μ_k t_k t_kᴴ) ≤ _TOP; the μ used and the z of the
        minimizer (the supergradient is 1 − |z_k|²)."""
        t = self.t
        r = t.shape[0]
        g = (t * mu) @ np.conj(t.T)
        top = float(np.linalg.eigvalsh(g)[-1])
        if top > _TOP:
            mu, g = mu * (_TOP / top), g * (_TOP / top)
        try:
            chol = np.linalg.cholesky(np.eye(r) - g)
        except np.linalg.LinAlgError:
            return 0.0, mu, None
        val, x = _ldp(*_rows(np.linalg.solve(chol, t), lo, hi))
        total = float(np.sum(mu)) * (1.0 - 8 * _EPS * mu.size) + val
        if x is None:
            return total, mu, None
        c = np.linalg.solve(np.conj(chol.T), x[:r] + 1j * x[r:])
        return total, mu, np.conj(t.T) @ c

    def enhanced(self, lo, hi, mu: np.ndarray, steps: int) -> tuple[float, np.ndarray]:
        """The bound at the parent's μ, then up to ``steps`` projected supergradient steps
        μ ← max(μ + η mean(μ)(1 − |z|²), 0) while they raise it; the best bound and its μ."""
        best, mu, z = self.lagrangian(lo, hi, mu)
        for _ in range(steps):
            if z is None:
                break
            step = np.maximum(mu + self.eta * float(np.mean(mu)) * (1.0 - np.abs(z) ** 2), 0.0)
            val, new, z = self.lagrangian(lo, hi, step)
            if not val > best:
                break
            best, mu = val, new
        return best, mu

    def plain(self, lo, hi) -> tuple[float, np.ndarray | None]:
        """Bound and relaxed c (complex) of the plain arc relaxation."""
        a, b = _rows(self.t, lo, hi)
        val, x = _ldp(a, b)
        r = self.t.shape[0]
        return val, None if x is None else x[:r] + 1j * x[r:]

    def polish(self, c: np.ndarray, steps: int = 3) -> tuple[float, np.ndarray]:
        """Fixed-phase QPs from c: each keeps the value or lowers it; returns the best
        (value, c) with min_k |z_k| = 1."""
        best, best_c = _scaled(self.t, c)
        r = self.t.shape[0]
        for _ in range(steps):
            th = np.angle(np.conj(self.t.T) @ best_c)
            _, x = _fixed_phase(self.t, th)
            if x is None:
                break
            val, cc = _scaled(self.t, x[:r] + 1j * x[r:])
            if not val < best * (1 - 1e-9):
                break
            best, best_c = val, cc
        return best, best_c


def _fixed_phase(t: np.ndarray, th: np.ndarray) -> tuple[float, np.ndarray | None]:
    """min ‖c‖² s.t. Re(e^{−jθ_k} z_k) ≥ 1 (an inner approximation: feasible for |z_k| ≥ 1)."""
    u = t * np.exp(1j * th)
    return _ldp(np.concatenate([u.real, u.imag]).T, np.ones(th.size))


def _scaled(t: np.ndarray, c: np.ndarray) -> tuple[float, np.ndarray]:
    """c scaled to min_k |z_k| = 1 and its value ‖c‖² (inf if some z_k = 0)."""
    zmin = float(np.min(np.abs(np.conj(t.T) @ c)))
    if not zmin > 0:
        return np.inf, c
    c = c / zmin
    return float(np.vdot(c, c).real), c


def _check(problem, subcarrier, tol, max_nodes, time_limit_s) -> None:
    if not isinstance(problem, BeamformingProblem):
        raise InvalidArgumentError(f"problem: expected a BeamformingProblem, got "
                                   f"{type(problem).__name__}")
    k, m, _, nt = problem.shape
    if problem.streams != 1 or nt != 1:
        raise InvalidArgumentError(
            f"certify_multicast: L = {problem.streams}, N_t = {nt} is not supported; only "
            "L = 1 with single-antenna devices (N_t = 1) is")
    if isinstance(subcarrier, bool) or not isinstance(subcarrier, int | np.integer) \
            or not 0 <= subcarrier < m:
        raise InvalidArgumentError(f"subcarrier: got {subcarrier!r}, must be an integer in "
                                   f"[0, {m})")
    if not (isinstance(tol, int | float) and np.isfinite(tol) and tol >= 0):
        raise InvalidArgumentError(f"tol: got {tol!r}, must be a finite number >= 0")
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int | np.integer) \
            or max_nodes < 1:
        raise InvalidArgumentError(f"max_nodes: got {max_nodes!r}, must be an integer >= 1")
    if not (isinstance(time_limit_s, int | float) and time_limit_s > 0):
        raise InvalidArgumentError(f"time_limit_s: got {time_limit_s!r}, must be > 0")


def _sdr_multipliers(w: np.ndarray) -> tuple[np.ndarray, float]:
    """SDR-dual multipliers y (K,) scaled to λ_max(Σ y_k g_k g_kᴴ) = 1, and Σ y (a valid
    bound on v*: weak duality of the SDR, whatever y is)."""
    k = w.shape[1]
    y = _barrier_path(w[None], 1, np.full((1, k), 1.0 / k), 60, np.array([np.inf]))[0]
    top = float(np.linalg.eigvalsh((w * y) @ np.conj(w.T))[-1])
    y = y / (top * (1.0 + 1e-12))
    return y, float(np.sum(y))


def _start(problem, subcarrier, incumbent, u) -> np.ndarray:
    """The incumbent in the reduced coordinates c = Uᴴa (fedopt's multicast by default)."""
    if incumbent is None:
        from fedopt.solvers.beamforming.multicast import multicast
        a = multicast(problem.subproblem([subcarrier]), rng=0).solution[0, :, 0]
    else:
        a = np.asarray(incumbent, dtype=complex).reshape(-1)
        if a.shape != (u.shape[0],) or not np.all(np.isfinite(a)) or not np.any(a):
            raise InvalidArgumentError(f"incumbent: expected a nonzero finite vector of "
                                       f"length N_r = {u.shape[0]}, got shape {a.shape}")
    return np.conj(u.T) @ a


def _split(lo: float, hi: float, theta: float, first: int) -> list[tuple[float, float]]:
    """Child arcs of [lo, hi] at the relaxed phase θ (module notes)."""
    width = hi - lo
    if width > np.pi + 1e-12:
        step = width / first
        th = lo + (theta - lo) % (2 * np.pi)
        return [(th + i * step, th + (i + 1) * step) for i in range(first)]
    th = lo + (theta - lo + np.pi) % (2 * np.pi) - np.pi
    if not lo + 0.25 * width <= th <= hi - 0.25 * width:
        th = 0.5 * (lo + hi)
    return [(lo, th), (th, hi)]


class _Search:
    """Best-first state of one certificate run (scaled units: values are ‖c‖²)."""

    def __init__(self, relax: _Relaxation, floor: float, c0: np.ndarray, steps: int) -> None:
        self.relax, self.floor, self.steps = relax, floor, steps
        self.ub, self.best = relax.polish(c0)
        self.heap: list = []
        self.count = 0
        self.closed = np.inf  # least bound of the nodes dropped below the incumbent

    def evaluate(self, lo: np.ndarray, hi: np.ndarray, parent: float, mu: np.ndarray) -> None:
        """Bound one node (plain and Lagrangian from the parent's μ), update the incumbent,
        queue the node unless it is pruned."""
        self.count += 1
        val, c = self.relax.plain(lo, hi)
        lb = max(val, parent, self.floor)
        if c is not None:
            cand, cc = _scaled(self.relax.t, c)
            if cand < 1.1 * self.ub:
                cand, cc = self.relax.polish(cc)
            if cand < self.ub:
                self.ub, self.best = cand, cc
        if lb < self.ub and c is not None and self.steps >= 0:
            val, mu = self.relax.enhanced(lo, hi, mu, self.steps)
            lb = max(lb, val)
        if lb >= self.ub:
            return
        if c is None:  # no relaxed point to branch on: keep the bound, drop the node
            self.closed = min(self.closed, lb)
            return
        heapq.heappush(self.heap, (lb, self.count, lo, hi, c, mu))

    def lower(self) -> float:
        top = self.heap[0][0] if self.heap else np.inf
        return min(top, self.ub, self.closed)

    def branch(self, first: int) -> None:
        lb, _, lo, hi, c, mu = heapq.heappop(self.heap)
        if lb >= self.ub:
            return
        z = np.conj(self.relax.t.T) @ c
        viol = 1.0 - np.abs(z)
        viol[0] = -np.inf  # arg z_1 = 0 and Re z_1 ≥ 1 hold in every relaxation
        k = int(np.argmax(viol))
        if not viol[k] > 1e-9:  # the relaxed point is feasible: the node is solved
            self.closed = min(self.closed, lb)
            return
        for a, b in _split(float(lo[k]), float(hi[k]), float(np.angle(z[k])), first):
            clo, chi = lo.copy(), hi.copy()
            clo[k], chi[k] = a, b
            self.evaluate(clo, chi, lb, mu)


def certify_multicast(problem: BeamformingProblem, *, subcarrier: int = 0, tol: float = 0.02,
                      max_nodes: int = 20_000, time_limit_s: float = 60.0,
                      incumbent: np.ndarray | None = None, steps: int = 2, eta: float = 0.3,
                      first_split: int = 4) -> dict:
    """Certify the L = 1 beamforming optimum of one subcarrier by branch and bound (module
    notes); only single-antenna devices (N_t = 1).

    Parameters
    ----------
    problem
        Beamforming problem with ``streams == 1`` and N_t = 1.
    subcarrier
        The subcarrier m to certify.
    tol
        Stop once (upper − lower) / upper ≤ tol.
    max_nodes, time_limit_s
        Stop after this many node relaxations or this much wall time.
    incumbent
        A beamformer (N_r,) to start from; default: fedopt's ``multicast`` (rng = 0).
    steps, eta
        Supergradient steps on the Lagrangian multipliers μ per node (−1: the plain arc bound
        only) and their relative step size.
    first_split
        Arcs a full circle is cut into when first branched on.

    Returns
    -------
    dict
        ``lower_bound`` and ``upper_bound`` (MSE f, the units of ``problem.objective``),
        ``gap`` = (upper − lower) / upper, ``nodes``, ``status`` (``"certified"``,
        ``"node-limit"`` or ``"time-limit"``), ``beamformer`` (unit-norm incumbent (N_r,)),
        ``sdr_dual_bound`` (the SDR-dual bound used as a floor) and ``wall_s``.
    """
    _check(problem, subcarrier, tol, max_nodes, time_limit_s)
    t0 = time.perf_counter()
    w, s = scaled_channels(problem)
    w = w[subcarrier]
    scale = problem.sigma2 / float(s[subcarrier]) ** 2
    u, t = np.linalg.qr(w)
    y, floor = _sdr_multipliers(w)
    search = _Search(_Relaxation(t, eta), floor, _start(problem, subcarrier, incumbent, u), steps)
    k = w.shape[1]
    lo, hi = np.full(k, -np.pi), np.full(k, np.pi)
    lo[0] = hi[0] = 0.0
    search.evaluate(lo, hi, 0.0, _TOP * y)
    status = "certified"
    while True:
        lower = search.lower()
        if search.ub - lower <= tol * search.ub or not search.heap:
            break  # (an empty queue: every node is pruned or solved — the search is complete)
        if search.count >= max_nodes:
            status = "node-limit"
            break
        if time.perf_counter() - t0 > time_limit_s:
            status = "time-limit"
            break
        search.branch(first_split)
    lower_f = lower * (1.0 - _SAFETY) * scale
    upper_f = search.ub * scale
    a = u @ search.best
    return {"lower_bound": lower_f, "upper_bound": upper_f,
            "gap": (upper_f - lower_f) / upper_f, "nodes": search.count, "status": status,
            "beamformer": a / np.linalg.norm(a), "sdr_dual_bound": floor * scale,
            "wall_s": time.perf_counter() - t0}
