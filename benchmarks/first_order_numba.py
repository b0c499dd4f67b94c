"""Experiment (issue 17): the first-order stage of one subcarrier compiled with numba.

Not part of fedopt (numba is not a dependency): a measurement for the decision the issue's
"10× faster than one SDR solve at N_r = 32, K = 50" target needs. The kernel is the algorithm of
``fedopt.solvers.beamforming.first_order.first_order_stage`` for one subcarrier (Barzilai–Borwein
steps, the same non-monotone Armijo search per column, single precision), with the two products
as BLAS calls (``np.dot``) and the rest as compiled loops. Both run the same stages on the same
starts of ``benchmarks.multicast.make_problem(32, 50, 0)`` (35 columns, as multicast has there
after the hot stage), 20 repeats each; the iterates agree to rounding at first and then drift
apart as single-precision paths do (the overlap of the end points is reported).

Run:  pip install numba && OMP_NUM_THREADS=1 python -m benchmarks.first_order_numba
"""

from __future__ import annotations

import time

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - an experiment, not a fedopt feature
    raise SystemExit("this experiment needs numba (pip install numba); it is not a fedopt "
                     "dependency") from None

from benchmarks.multicast import make_problem
from fedopt.solvers.beamforming.first_order import first_order_stage, realify
from fedopt.solvers.beamforming.multicast import scaled_channels

_ARMIJO = 1e-4
_BACKTRACKS = 30
_MEMORY = 5


@njit(cache=False)
def _lse(wt, wtt, k, x, tau):
    """F (n,) and Riemannian gradient (2N_r, n) at unit columns x (2N_r, n)."""
    z = np.dot(wt, x)  # (2KN_t, n)
    rows, n = z.shape
    per = rows // k
    f = np.empty(n, dtype=x.dtype)
    qz = np.empty_like(z)
    tiny = np.finfo(x.dtype).tiny
    y = np.empty(k, dtype=x.dtype)
    g = np.empty(k, dtype=x.dtype)
    for j in range(n):
        ymax = -np.inf
        for kk in range(k):
            s = 0.0
            for t in range(per):
                v = z[kk * per + t, j]
                s += v * v
            if s < tiny:
                s = tiny
            g[kk] = s
            y[kk] = -np.log(s)
            if y[kk] > ymax:
                ymax = y[kk]
        sw = 0.0
        for kk in range(k):
            e = np.exp((y[kk] - ymax) / tau)
            y[kk] = e
            sw += e
        f[j] = ymax + tau * np.log(sw)
        for kk in range(k):
            q = y[kk] / (sw * g[kk])
            for t in range(per):
                qz[kk * per + t, j] = q * z[kk * per + t, j]
    grad = 2.0 * x - 2.0 * np.dot(wtt, qz)
    for j in range(n):
        d = 0.0
        for i in range(x.shape[0]):
            d += x[i, j] * grad[i, j]
        for i in range(x.shape[0]):
            grad[i, j] -= d * x[i, j]
    return f, grad


@njit(cache=False)
def fo_stage(wt, wtt, k, x0, tau, max_iterations, tol):
    """BB steps with a non-monotone Armijo search per column, from unit columns x0 (2N_r, S);
    returns (x, steps)."""
    x = x0.copy()
    dim, s = x.shape
    f, g = _lse(wt, wtt, k, x, tau)
    gn2 = np.zeros(s, dtype=x.dtype)
    alpha = np.zeros(s, dtype=x.dtype)
    for j in range(s):
        gn2[j] = np.sum(g[:, j] ** 2)
        alpha[j] = 1.0 / max(np.sqrt(gn2[j]), np.finfo(x.dtype).tiny)
    memory = np.empty((_MEMORY, s), dtype=x.dtype)
    for i in range(_MEMORY):
        memory[i] = f
    it = 0
    while it < max_iterations:
        live = gn2 > tol * tol
        if not live.any():
            break
        it += 1
        ref = np.empty(s, dtype=x.dtype)
        for j in range(s):
            ref[j] = memory[:, j].max()
        step = np.where(live, alpha, 0.0).astype(x.dtype)
        done = ~live
        new_x, new_f, new_g = x.copy(), f.copy(), g.copy()
        for _ in range(_BACKTRACKS):
            cols = np.flatnonzero(~done)
            if cols.size == 0:
                break
            trial = np.empty((dim, cols.size), dtype=x.dtype)
            for c in range(cols.size):
                j = cols[c]
                nrm = 0.0
                for i in range(dim):
                    v = x[i, j] - step[j] * g[i, j]
                    trial[i, c] = v
                    nrm += v * v
                nrm = np.sqrt(nrm)
                for i in range(dim):
                    trial[i, c] /= nrm
            tf, tg = _lse(wt, wtt, k, trial, tau)
            for c in range(cols.size):
                j = cols[c]
                if tf[c] <= ref[j] - _ARMIJO * step[j] * gn2[j]:
                    new_x[:, j] = trial[:, c]
                    new_g[:, j] = tg[:, c]
                    new_f[j] = tf[c]
                    done[j] = True
                else:
                    step[j] *= 0.25
        for j in range(s):
            dxg = 0.0
            for i in range(dim):
                dxg += new_x[i, j] * g[i, j]
            sy = 0.0
            ss = 0.0
            for i in range(dim):
                sv = new_x[i, j] - x[i, j]
                yv = new_g[i, j] - (g[i, j] - dxg * new_x[i, j])
                sy += sv * yv
                ss += sv * sv
            sy = abs(sy)
            a = ss / sy if sy > 0 else 10.0 * step[j]
            alpha[j] = min(max(a, 1e-12), 1e12)
            if live[j] and not done[j]:
                gn2[j] = 0.0
            else:
                gn2[j] = np.sum(new_g[:, j] ** 2)
        x, f, g = new_x, new_f, new_g
        memory[it % _MEMORY] = f
    return x, it

def main() -> None:
    t0 = time.perf_counter()
    w, _ = scaled_channels(make_problem(32, 50, 0))
    wt, wtt = realify(w)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((35, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    xt = np.ascontiguousarray(x.T)
    fo_stage(wt[0], wtt[0], 50, xt, 0.3, 60, 3e-4)
    print(f"numba compile (or cache load) and first call: {time.perf_counter() - t0:.2f} s")
    print("| tau | steps (numpy / numba) | end-point overlap min / median | numpy | numba "
          "| ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    sub = np.zeros(35, dtype=int)
    for tau in (3.0, 1.0, 0.3, 0.1):
        ref, its = first_order_stage((wt, wtt), 50, x, sub, tau, 60, 1e-3 * tau)
        out, its_nb = fo_stage(wt[0], wtt[0], 50, xt, tau, 60, 1e-3 * tau)
        overlap = np.abs(np.sum(ref * out.T, axis=1))
        times = []
        for compiled in (False, True):
            reps = []
            for _ in range(20):
                t = time.perf_counter()
                if compiled:
                    fo_stage(wt[0], wtt[0], 50, xt, tau, 60, 1e-3 * tau)
                else:
                    first_order_stage((wt, wtt), 50, x, sub, tau, 60, 1e-3 * tau)
                reps.append(time.perf_counter() - t)
            times.append(float(np.median(reps)))
        print(f"| {tau:g} | {its} / {its_nb} | {overlap.min():.3f} / {np.median(overlap):.4f} | "
              f"{1e3 * times[0]:.2f} ms | {1e3 * times[1]:.2f} ms | {times[0] / times[1]:.1f} |")


if __name__ == "__main__":
    main()
