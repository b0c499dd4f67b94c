"""The first-order stages of the ``"multicast"`` path following, in real arithmetic.

A stage minimizes the smoothed max F_τ(a) = τ log Σ_k exp(−log g_k(a) / τ) on the unit sphere
(:mod:`.newton` has the problem and the Newton stages) by Riemannian Barzilai–Borwein steps with
a per-column non-monotone Armijo backtracking (the scheme of
:func:`~fedopt.solvers.beamforming.descent.stage_batched`), for many columns at once.

**Real layout.** A beamformer is handled as x = [Re a; Im a] ∈ R^{2N_r}, and a subcarrier's
channels as one real matrix Wt (2 K N_t × 2 N_r) whose rows hold, device by device and antenna
by antenna, the real and then the imaginary part of w_tᴴ a:

    Re(wᴴa) = Re(w)ᵀRe(a) + Im(w)ᵀIm(a),   Im(wᴴa) = Re(w)ᵀIm(a) − Im(w)ᵀRe(a).

Then z = Wt x is one real GEMM, device k's gain g_k is the sum of the squares of its 2 N_t
consecutive rows of z, and the realified gradient 2∂F/∂a* is 2x − 2 Wtᵀ(q ⊙ z) with
q_k = p_k / g_k repeated over the device's rows (p the softmax weights), projected on the
tangent space. Against the complex form (one ZGEMM per product, gains summed over a strided
axis), one evaluation of 16 columns × 64 subcarriers at N_r = 16, K N_t = 80 took 1.47 ms
instead of 1.59 ms in double precision and 0.98 ms in single (benchmarks/RESULTS.md, issue 17).

**Precision.** The first-order stages only carry each start into a basin for the next stage;
the Newton stages that follow (in double precision) converge to the point. So they run in
single precision by default: F_τ and its gradient are then accurate to ~1e-6 relative, and a
column whose line search cannot find a decrease at that resolution stops, as a stalled column
does in double precision.
"""

from __future__ import annotations

import numpy as np

__all__ = ["first_order_stage", "lse_and_gradient", "realify"]

_ARMIJO = 1e-4
_BACKTRACKS = 30
#: BB memory of the non-monotone line search (the reference is the max of the last values)
_MEMORY = 5


def realify(w: np.ndarray, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(Wt, Wtᵀ) of complex channels w (M, N_r, K N_t): Wt (M, 2 K N_t, 2 N_r), both
    C-contiguous, with z = Wt x the interleaved real and imaginary parts of wᴴa (module notes)."""
    m, nr, kn = w.shape
    wr, wi = np.swapaxes(w.real, 1, 2), np.swapaxes(w.imag, 1, 2)  # (M, K N_t, N_r)
    re = np.concatenate([wr, wi], axis=2)
    im = np.concatenate([-wi, wr], axis=2)
    wt = np.stack([re, im], axis=2).reshape(m, 2 * kn, 2 * nr).astype(dtype)
    return np.ascontiguousarray(wt), np.ascontiguousarray(np.swapaxes(wt, 1, 2))


def lse_and_gradient(wt: np.ndarray, wtt: np.ndarray, k: int, x: np.ndarray,
                     tau: float) -> tuple[np.ndarray, np.ndarray]:
    """F_τ (M, S) and its realified Riemannian gradient (M, 2N_r, S) at unit-norm columns
    x (M, 2N_r, S), for K devices: two GEMMs per call."""
    m, _, s = x.shape
    z = wt @ x  # (M, 2 K N_t, S)
    sq = np.square(z).reshape(m, k, -1, s)
    g = sq[:, :, 0].copy()
    for t in range(1, sq.shape[2]):  # a strided reduction over 2 N_t rows is slower
        g += sq[:, :, t]
    np.maximum(g, np.finfo(g.dtype).tiny, out=g)
    y = -np.log(g)  # (M, K, S)
    ymax = y.max(axis=1)
    ex = np.exp((y - ymax[:, None, :]) / tau)
    sw = ex.sum(axis=1)
    q = ex / (sw[:, None, :] * g)
    qz = (q[:, :, None, :] * z.reshape(m, k, -1, s)).reshape(z.shape)
    grad = 2.0 * x - 2.0 * (wtt @ qz)
    grad -= (x * grad).sum(axis=1, keepdims=True) * x
    return ymax + tau * np.log(sw), grad


def _trial(x: np.ndarray, g: np.ndarray, step: np.ndarray) -> np.ndarray:
    t = x - step[:, None, :] * g
    return t / np.sqrt(np.square(t).sum(axis=1, keepdims=True))


def _search(wt, wtt, k, x, f, g, gn2, step, ref, tau, live):
    """The non-monotone Armijo backtracking of one step: (x, F, gradient, step, accepted).
    Only the rows with a column still searching are evaluated again (with one row, only its
    columns still searching); the full batch goes without gathers."""
    m, _, s = x.shape
    done = ~live
    new_x, new_f, new_g = x.copy(), f.copy(), g.copy()
    rows = np.flatnonzero(live.any(axis=1))
    for _ in range(_BACKTRACKS):
        cols = np.flatnonzero(~done[0]) if m == 1 else None
        if cols is not None and cols.size < s:
            trial = _trial(x[:, :, cols], g[:, :, cols], step[:, cols])
            tf, tg = lse_and_gradient(wt, wtt, k, trial, tau)
            ok = tf[0] <= ref[0, cols] - _ARMIJO * step[0, cols] * gn2[0, cols]
            sel = cols[ok]
            new_x[0][:, sel], new_g[0][:, sel] = trial[0][:, ok], tg[0][:, ok]
            new_f[0, sel] = tf[0, ok]
            done[0, sel] = True
        elif rows.size * 2 >= m:  # gathers cost more than evaluating the rest
            trial = _trial(x, g, step)
            tf, tg = lse_and_gradient(wt, wtt, k, trial, tau)
            ok = ~done & (tf <= ref - _ARMIJO * step * gn2)
            new_x = np.where(ok[:, None, :], trial, new_x)
            new_f = np.where(ok, tf, new_f)
            new_g = np.where(ok[:, None, :], tg, new_g)
            done |= ok
        else:
            trial = _trial(x[rows], g[rows], step[rows])
            tf, tg = lse_and_gradient(wt[rows], wtt[rows], k, trial, tau)
            ok = ~done[rows] & (tf <= ref[rows] - _ARMIJO * step[rows] * gn2[rows])
            new_x[rows] = np.where(ok[:, None, :], trial, new_x[rows])
            new_f[rows] = np.where(ok, tf, new_f[rows])
            new_g[rows] = np.where(ok[:, None, :], tg, new_g[rows])
            done[rows] |= ok
        if done.all():
            break
        step = np.where(done, step, step * 0.25)
        rows = np.flatnonzero(~done.all(axis=1))
    return new_x, new_f, new_g, step, done


#: Relative cost of one row of c columns in an evaluation (two GEMMs per row and the
#: elementwise work; measured in single precision at N_r = 16, K N_t = 80: a row of one column
#: ~2.5 µs, 4 columns ~7.3 µs, 8 ~10.6 µs, 16 ~14.5 µs; wider rows scale linearly)
_ROW_COST = {1: 1.0, 4: 2.9, 8: 4.2, 16: 5.8}
#: a stage repacks its live columns once they fill at most this fraction of the slots
_REPACK_BELOW = 0.6


def _row_cost(c: int) -> float:
    if c in _ROW_COST:
        return _ROW_COST[c]
    widths = sorted(_ROW_COST)
    if c > widths[-1]:
        return _ROW_COST[widths[-1]] * c / widths[-1]
    return float(np.interp(c, widths, [_ROW_COST[w] for w in widths]))


def _layout(col_sub: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Rows for the columns of subcarriers ``col_sub`` (N,): (row subcarrier (R,), the column
    index in each slot (R, c), −1 for padding; the layout's cost). Each subcarrier's columns
    fill ⌈n_m / c⌉ rows of c slots, with c the cheapest width by :data:`_ROW_COST` (one row per
    subcarrier among the candidates)."""
    counts = np.bincount(col_sub, minlength=m)
    counts = counts[counts > 0]
    costs = {c: float(np.sum(-(-counts // c))) * _row_cost(c)
             for c in {*_ROW_COST, int(counts.max())}}
    c = min(costs, key=lambda w: (costs[w], -w))
    order = np.argsort(col_sub, kind="stable")
    subs, first, per = np.unique(col_sub[order], return_index=True, return_counts=True)
    rows = -(-per // c)
    rsub = np.repeat(subs, rows)
    rank = np.arange(order.size) - np.repeat(first, per)
    r = np.repeat(np.cumsum(rows) - rows, per) + rank // c
    col = np.full((rsub.size, c), -1)
    col[r, rank % c] = order
    return rsub, col, costs[c]


class _Rows:
    """The state of a stage's columns laid out in rows (see :func:`_layout`)."""

    def __init__(self, channels, k: int, col_sub: np.ndarray, m: int):
        self.channels, self.k, self.m = channels, k, m
        self.col_sub = col_sub

    def place(self, cols: np.ndarray, state: dict[str, np.ndarray]) -> None:
        """Lay out the columns ``cols`` (flat indices) with their state (first axis: column;
        ``memory``: second axis); padding slots copy their row's first column, frozen."""
        rsub, col, _ = _layout(self.col_sub[cols], self.m)
        self.col = np.where(col >= 0, cols[np.maximum(col, 0)], -1)
        src = np.where(col >= 0, col, col[:, :1])  # (R, c) positions in cols
        self.wt, self.wtt = self.channels[0][rsub], self.channels[1][rsub]
        self.x = np.ascontiguousarray(np.swapaxes(state["x"][src], 1, 2))
        self.g = np.ascontiguousarray(np.swapaxes(state["g"][src], 1, 2))
        self.f, self.alpha = state["f"][src], state["alpha"][src]
        self.gn2 = np.where(col >= 0, state["gn2"][src], 0.0)
        self.memory = state["memory"][:, src]

    def take(self, mask: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The flat indices and state of the columns in the slots ``mask`` (R, c)."""
        return self.col[mask], {
            "x": np.swapaxes(self.x, 1, 2)[mask], "g": np.swapaxes(self.g, 1, 2)[mask],
            "f": self.f[mask], "gn2": self.gn2[mask], "alpha": self.alpha[mask],
            "memory": self.memory[:, mask]}


def _initial(rows: _Rows, x: np.ndarray, tau: float) -> None:
    """Lay out every column of x (N, 2N_r) and evaluate F_τ and its gradient there."""
    n = x.shape[0]
    zero = np.zeros(n, dtype=x.dtype)
    rows.place(np.arange(n), {"x": x, "g": x, "f": zero, "gn2": zero, "alpha": zero,
                              "memory": np.zeros((_MEMORY, n), dtype=x.dtype)})
    rows.f, rows.g = lse_and_gradient(rows.wt, rows.wtt, rows.k, rows.x, tau)
    rows.gn2 = np.where(rows.col >= 0, np.square(rows.g).sum(axis=1), 0.0).astype(x.dtype)
    rows.alpha = 1.0 / np.maximum(np.sqrt(rows.gn2), np.finfo(x.dtype).tiny)
    rows.memory = np.repeat(rows.f[None], _MEMORY, axis=0)


def _iterate(rows: _Rows, tau: float, live: np.ndarray, it: int) -> None:
    """One Barzilai–Borwein step of every live column, in place."""
    x, g = rows.x, rows.g
    step = np.where(live, rows.alpha, 0.0).astype(x.dtype)
    new_x, new_f, new_g, step, done = _search(rows.wt, rows.wtt, rows.k, x, rows.f, g,
                                              rows.gn2, step, rows.memory.max(axis=0), tau,
                                              live)
    g_moved = g - (new_x * g).sum(axis=1, keepdims=True) * new_x
    s_vec, y_vec = new_x - x, new_g - g_moved
    sy = np.abs((s_vec * y_vec).sum(axis=1))
    ss = np.square(s_vec).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        bb = ss / sy
    rows.alpha = np.clip(np.where(sy > 0, bb, 10 * step), 1e-12, 1e12)
    stopped = (live & ~done) | (rows.col < 0)  # stalled, or padding (never moves)
    rows.x, rows.f, rows.g = new_x, new_f, new_g
    rows.gn2 = np.where(stopped, 0.0, np.square(new_g).sum(axis=1))
    rows.memory[it % _MEMORY] = new_f


def first_order_stage(channels: tuple[np.ndarray, np.ndarray], k: int, x: np.ndarray,
                      col_sub: np.ndarray, tau: float, max_iterations: int,
                      tol: float) -> tuple[np.ndarray, int]:
    """Minimize F_τ from unit-norm columns x (N, 2N_r) of the subcarriers ``col_sub`` (N,),
    with ``channels`` = :func:`realify` of the per-subcarrier channels; returns (x, iterations).

    A column stops when its gradient norm is below ``tol`` or its line search fails. The
    columns are laid out in rows of c columns with their subcarrier's channels (one GEMM per
    product); once the live ones fill at most :data:`_REPACK_BELOW` of the slots, they are laid
    out again and the others leave. Each column's iterates do not depend on the layout (the
    steps and line searches are per column)."""
    rows = _Rows(channels, k, np.asarray(col_sub), channels[0].shape[0])
    out = x.copy()
    _initial(rows, x, tau)
    it = 0
    while it < max_iterations:
        live = rows.gn2 > tol**2
        n_live = int(live.sum())
        if not n_live:
            break
        if n_live <= _REPACK_BELOW * np.count_nonzero(rows.col >= 0):
            done = (rows.col >= 0) & ~live
            out[rows.col[done]] = np.swapaxes(rows.x, 1, 2)[done]
            rows.place(*rows.take(live))
            live = rows.gn2 > tol**2
        it += 1
        _iterate(rows, tau, live, it)
    filled = rows.col >= 0
    out[rows.col[filled]] = np.swapaxes(rows.x, 1, 2)[filled]
    return out, it
