"""TSFA's round solver (spec 04 §5, the "exact scheme"): min over m ∈ {1..r}^K of
J(m) = V W(m) + Q τ*(m), with W(m) = Σ_k p_k E_drop,k(m_k) and τ*(m) the min-max latency of the
best bands (:func:`~fedopt.solvers.bandwidth.allocate_min_latency`).

1. *Deadline form.* For a deadline τ, device k needs b_k(m, τ) Hz (closed form,
   :func:`fedopt.link.bandwidth_for_deadline`, all m at once). The best drop error that
   fits, D(τ) = min {W(m) : Σ_k b_k(m_k, τ) ≤ B_tot}, is a multiple-choice knapsack, and
   min_m J(m) = min_τ Q τ + V D(τ), attained at τ = τ*(m*).
2. *Lagrangian / LP relaxation.* E_drop,k(m) is convex and decreasing in m (its decrements are the
   sorted s_i²) and b_k(m, τ) is convex and increasing in m (the payload is affine in m and the
   band needed for a rate is convex in the rate), so every option lies on its device's convex
   hull. The Lagrangian dual of the knapsack (each device picks argmin_m p_k E_drop,k(m) + ν
   b_k(m, τ)) therefore equals its LP relaxation, which the greedy on incremental ratios
   gain / extra band solves exactly; the optimal multiplier ν* is the ratio of the item where
   the band runs out, read off the greedy instead of found by bisection on ν. This gives
   D_LP(τ) ≤ D(τ), one fractional device (the one on the multiplier's breakpoint) and, rounded
   down and *repaired* (the leftover band is spent greedily on the next components that still
   fit), an integer candidate m(τ).
3. *Search over τ.* τ ranges over [τ*(all m = 1), min(τ*(all m = r), U/Q)] (U: best objective
   found). On an interval [τ_i, τ_{i+1}] of a grid the objective is at least the larger of
   (a) Q τ_i + V D_LP(τ_{i+1}) (D_LP falls with τ) and (b) the Lagrangian bound with each
   b_k(m, ·) replaced by its tangent at τ_{i+1} (b is convex in τ, so the tangent lies below
   it): that bound is concave in τ, so checking both interval ends suffices, and its slack is
   second order in the interval width. The grid (17 deadlines) is refined by halving the
   intervals whose bound is lowest. Every candidate m is evaluated exactly at its own optimal
   deadline τ*(m), never at a grid τ: grid points only steer the search and bound it, which is
   what makes the search exact rather than a grid approximation.
4. *Branch and bound.* The LP bound leaves an integrality gap (off the convex hull the knapsack
   is not solved by its Lagrangian). When ``exact`` is on, a best-first branch and bound over
   boxes lo_k ≤ m_k ≤ hi_k closes it: a box's bound is the minimum over the grid intervals of
   the interval bound above restricted to the box; it branches on the LP's fractional device
   (or on its widest device when the LP is integral at both ends), evaluates the candidates of
   each box exactly, evaluates boxes reduced to a point exactly, and prunes boxes whose bound
   is within ``rtol`` of the incumbent.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np

from fedopt.link import bandwidth_for_deadline, dbandwidth_dtau
from fedopt.solvers.bandwidth import allocate_min_latency
from fedopt.solvers.tsfa.grid import Grid, GridStore, LPRelaxation

__all__ = ["HEURISTIC_RTOL", "RoundSolver"]

#: Without the branch and bound, the τ-search stops refining once the certified relative gap
#: is below this (the Lagrangian / repair answer is then reported with its gap).
HEURISTIC_RTOL = 1e-6

#: Deadline intervals split per refinement round of the τ-search.
REFINE_BATCH = 8

#: The lower bounds relax B_tot by this relative amount, so that a combination whose bands sum
#: to B_tot up to round-off (e.g. the one that defines a grid end) is never wrongly excluded.
BUDGET_RELAX = 1e-9


class RoundSolver:
    """J(m) = Σ_k w_k(m_k) + Q τ*(m) over m ∈ {1..r}^K (levels j = m − 1), w = V p E_drop."""

    def __init__(self, c: np.ndarray, tc: np.ndarray, payload: np.ndarray, w: np.ndarray,
                 total_hz: float, queue: float, *, rtol: float, grid_points: int,
                 refine_rounds: int | None):
        self.c, self.tc, self.payload, self.w = c, tc, payload, w
        self.k, self.r = w.shape
        self.total = total_hz
        self.relaxed = total_hz * (1.0 + BUDGET_RELAX)
        self.q = queue
        self.rtol = rtol
        self.grid_points = grid_points
        self.refine_rounds = refine_rounds
        self.devices = np.arange(self.k)
        self.levels = np.arange(self.r)
        self.gain = np.maximum(w[:, :-1] - w[:, 1:], 0.0)          # (K, r − 1)
        self.item_dev = np.repeat(self.devices, self.r - 1)
        self.item_lvl = np.tile(np.arange(self.r - 1), self.k)
        self.useful = (self.gain > 0).ravel()
        self.cache: dict[bytes, tuple[float, Any]] = {}
        self.best: tuple[float, np.ndarray] | None = None
        self.nodes = 0
        self.candidates = 3
        self.tau_lo = 0.0
        self.grid = GridStore(grid_points + 8 * REFINE_BATCH)
        self.root_lb = np.empty(0)
        self.root_phi = np.empty(0)
        self._root_lb_cache: dict[tuple[float, float], float] = {}
        self._lo0 = np.zeros(self.k, dtype=np.int64)
        self._hi0 = np.full(self.k, self.r - 1, dtype=np.int64)

    # -- exact evaluation -----------------------------------------------------------------
    def evaluate(self, levels: np.ndarray) -> tuple[float, Any]:
        """J(m) at its own optimal deadline τ*(m) (cached)."""
        levels = np.asarray(levels, dtype=np.int64)
        key = levels.tobytes()
        hit = self.cache.get(key)
        if hit is None:
            alloc = allocate_min_latency(self.payload[levels], self.tc, self.c,
                                         self.total).solution
            value = float(self.w[self.devices, levels].sum() + self.q * alloc.latency_s)
            hit = (value, alloc)
            self.cache[key] = hit
            if self.best is None or value < self.best[0]:
                self.best = (value, levels.copy())
        return hit

    @property
    def upper(self) -> float:
        return self.best[0] if self.best is not None else math.inf

    def tol(self) -> float:
        return self.rtol * max(abs(self.upper), 1e-300)

    # -- the deadline grid ------------------------------------------------------------------
    def _points(self, taus: np.ndarray) -> Grid:
        """Bands, slopes and sorted knapsack items at the deadlines ``taus`` (vectorized)."""
        taus = np.asarray(taus, dtype=float)
        band = np.asarray(bandwidth_for_deadline(self.payload[None, :, None], self.tc, self.c,
                                                 taus[:, None, None]), dtype=float)
        band = np.swapaxes(band, 1, 2)                               # (P, K, r)
        slack = taus[:, None, None] - self.tc[None, :, None]
        # b_k(τ) solves b log2(1 + c/b) = S/(τ − T_cmp): −b' = S/(τ − T_cmp)² · ln 2/φ(c/b)
        slope = -dbandwidth_dtau(self.payload[None, None, :], slack, band,
                                 self.c[None, :, None])
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            dband = band[:, :, 1:] - band[:, :, :-1]
            dband = np.where(np.isinf(band[:, :, 1:]), np.inf, dband)
            ratio = np.where(dband > 0, self.gain / dband, np.where(self.gain > 0, np.inf, 0.0))
        # b is convex in τ, so b(τ) ≥ b(τ_p) + slope·(τ_p − τ) below τ_p; the shrink keeps the
        # tangent below b despite round-off in the slope
        slope = np.where(np.isfinite(band) & np.isfinite(slope), slope * (1.0 - 1e-9), 0.0)
        ratio = np.where(np.isinf(dband), 0.0, ratio)
        # the true ratios fall with the level (convex options); cummin only removes round-off
        ratio = np.minimum.accumulate(ratio, axis=2).reshape(len(taus), -1)
        order = np.lexsort((np.broadcast_to(self.item_lvl, ratio.shape), -ratio), axis=-1)
        dband = np.take_along_axis(dband.reshape(len(taus), -1), order, axis=1)
        return Grid(tau=taus, band=band, slope=slope, order=order, dband=dband,
                    gain=self.gain.ravel()[order], dev=self.item_dev[order],
                    lvl=self.item_lvl[order])

    def _add(self, taus: np.ndarray) -> None:
        """Merge new deadlines into the grid, try the candidates of the most promising ones
        (smallest Q τ + D_LP(τ)) and recompute the root's interval bounds."""
        new = self._points(taus)
        lp = self._lp(new, self._lo0, self._hi0)
        phi = self.q * new.tau + lp.value
        for p in np.argsort(phi)[:self.candidates]:
            if np.isfinite(phi[p]):
                self._try(self._candidate(new, int(p), self._lo0, lp), new)
        self.grid.add(new, phi)
        self.root_phi = self.grid.phi
        # the root bounds of intervals that no new deadline split are unchanged
        tau = self.grid.tau
        pairs = list(zip(tau[:-1].tolist(), tau[1:].tolist(), strict=True))
        lbs = np.array([self._root_lb_cache.get(pair, np.nan) for pair in pairs])
        fresh = np.flatnonzero(np.isnan(lbs))
        if fresh.size:
            lbs[fresh] = self._interval_lb(self.grid, self._lo0, self._hi0, fresh)[0]
            self._root_lb_cache.update({pairs[i]: lbs[i] for i in fresh})
        self.root_lb = lbs

    # -- bounds -----------------------------------------------------------------------------
    def _lp(self, g: Grid, lo: np.ndarray, hi: np.ndarray) -> LPRelaxation:
        """D_LP,box(τ_p) at every deadline of ``g``: the greedy on incremental ratios, exact for
        the LP relaxation because every option lies on its device's convex hull."""
        elig = (self.useful & (self.item_lvl >= lo[self.item_dev])
                & (self.item_lvl < hi[self.item_dev]))
        e = elig[g.order]                                            # (P, n)
        db = np.where(e, g.dband, 0.0)
        base = g.band[:, self.devices, lo].sum(axis=1)               # (P,)
        resid = self.relaxed - base
        cum = np.cumsum(db, axis=1)
        over = cum > resid[:, None]
        taken = e & ~over
        has_break = over.any(axis=1)
        brk = np.argmax(over, axis=1)
        rows = np.arange(len(g.tau))
        before = np.where(brk > 0, cum[rows, np.maximum(brk - 1, 0)], 0.0)
        db_brk = db[rows, brk]
        gain_brk = np.where(has_break, g.gain[rows, brk], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            finite = np.isfinite(db_brk) & (db_brk > 0)
            frac = np.where(finite, (resid - before) / db_brk, 0.0)
            nu = np.where(has_break & finite, gain_brk / db_brk, 0.0)
        frac = np.clip(np.where(has_break, frac, 0.0), 0.0, 1.0)
        value = (self.w[self.devices, lo].sum() - np.sum(np.where(taken, g.gain, 0.0), axis=1)
                 - frac * gain_brk)
        feasible = np.isfinite(base) & (resid >= 0)
        return LPRelaxation(value=np.where(feasible, value, np.inf),
                            nu=np.where(feasible, nu, 0.0), taken=taken, brk=brk,
                            has_break=has_break & feasible, resid=resid, elig=elig)

    def _interval_lb(self, g: Grid | GridStore, lo: np.ndarray, hi: np.ndarray, idx: np.ndarray
                     ) -> tuple[np.ndarray, LPRelaxation, LPRelaxation, Grid, Grid]:
        """Lower bound of J over the box and τ ∈ [τ_i, τ_i+1] for each interval i of ``idx``.

        Two valid bounds, the larger is kept: (a) Q τ_i + V D_LP(τ_i+1) (D_LP falls with τ);
        (b) Lagrangian: for ν ≥ 0, J ≥ f(τ) = Q τ − ν B + Σ_k min_m (w_k(m) + ν b_k(m, τ)), and
        on the interval b_k(m, τ) ≥ b_k(m, τ_i+1) + slope·(τ_i+1 − τ) (convexity), which makes
        f concave in τ, so its minimum is at an end; ν from the LPs at both ends.
        """
        left, right = g.take(idx), g.take(idx + 1)
        lp_l, lp_r = self._lp(left, lo, hi), self._lp(right, lo, hi)
        best = self.q * left.tau + lp_r.value
        inbox = (self.levels >= lo[:, None]) & (self.levels <= hi[:, None])        # (K, r)
        band = np.where(inbox, right.band, np.inf)
        dt = (right.tau - left.tau)[:, None, None]
        ext = band + right.slope * dt
        nus = [lp_r.nu, lp_l.nu, np.sqrt(lp_r.nu * lp_l.nu)]
        with np.errstate(invalid="ignore"):
            for nu in nus:
                n3 = nu[:, None, None]
                at_r = np.where(np.isinf(band), np.inf, self.w + n3 * band).min(axis=2).sum(1)
                at_l = np.where(np.isinf(ext), np.inf, self.w + n3 * ext).min(axis=2).sum(1)
                f_r = self.q * right.tau - nu * self.relaxed + at_r
                f_l = self.q * left.tau - nu * self.relaxed + at_l
                best = np.maximum(best, np.minimum(f_l, f_r))
        best = np.where(np.isfinite(lp_r.value), best, np.inf)
        return best, lp_l, lp_r, left, right

    # -- candidates -------------------------------------------------------------------------
    def _candidate(self, g: Grid, p: int, lo: np.ndarray, lp: LPRelaxation) -> np.ndarray:
        """The LP solution at τ_p rounded down, then the leftover band spent greedily on the
        next components (in ratio order) that still fit."""
        taken = lp.taken[p]
        levels = lo + np.bincount(g.dev[p][taken], minlength=self.k)
        if not lp.has_break[p]:
            return levels
        brk = int(lp.brk[p])
        left = float(lp.resid[p]) - float(g.dband[p][taken].sum())
        blocked = np.zeros(self.k, dtype=bool)
        blocked[g.dev[p, brk]] = True
        tail = np.arange(brk + 1, g.order.shape[1])
        tail = tail[lp.elig[g.order[p, tail]] & (g.dband[p, tail] <= left)]
        for i in tail:
            k, j, d = g.dev[p, i], g.lvl[p, i], g.dband[p, i]
            if blocked[k] or levels[k] != j:
                continue
            if d <= left:
                levels[k] += 1
                left -= d
            else:
                blocked[k] = True
        return levels

    def _try(self, levels: np.ndarray, g: Grid) -> None:
        """Evaluate a candidate exactly unless the deadlines at which it does not fit show that
        it cannot win (τ*(m) exceeds them)."""
        tau_low = self.tau_lo  # τ*(m) ≥ τ*(all m = 1)
        for grid in (g, self.grid.rows() if self.grid.n else None):
            if grid is not None:
                need = grid.band[:, self.devices, levels].sum(axis=1)
                short = grid.tau[~(need <= self.total)]
                tau_low = max(tau_low, float(short.max())) if short.size else tau_low
        if float(self.w[self.devices, levels].sum()) + self.q * tau_low < self.upper - self.tol():
            self.evaluate(levels)

    # -- the search -------------------------------------------------------------------------
    def solve(self, exact: bool, max_nodes: int) -> tuple[np.ndarray, float, bool]:
        """Best levels, a certified lower bound, and whether the search finished."""
        lo0, hi0 = self._lo0, self._hi0
        _, a_lo = self.evaluate(lo0)
        _, a_hi = self.evaluate(hi0)
        tau_lo = self.tau_lo = a_lo.latency_s
        tau_hi = min(a_hi.latency_s, self.upper / self.q)
        if not tau_hi > tau_lo * (1.0 + 1e-12):
            # no deadline above τ*(all m = 1) can beat the incumbent (Q τ ≥ U there)
            return self.best[1], self.upper, True
        self._add(np.linspace(tau_lo, tau_hi, self.grid_points))
        # without branching the τ-search only aims at a certified gap of HEURISTIC_RTOL
        target = self.rtol if exact else max(self.rtol, HEURISTIC_RTOL)
        rounds = self.refine_rounds if self.refine_rounds is not None else (4 if exact else 8)
        for _ in range(rounds):
            g = self.grid
            lbs, phi = self.root_lb, self.root_phi
            up, tol = self.upper, max(self.tol(), target * abs(self.upper))
            # what refining [τ_i, τ_i+1] can still gain; once it is small against the gap, the
            # rest is the knapsack's integrality gap, which only branching closes
            room = np.minimum(phi[:-1], phi[1:]) - lbs
            split = (lbs < up - tol) & (room > np.maximum(tol, 0.1 * (up - lbs)))
            idx = np.flatnonzero(split)
            if idx.size == 0:
                break
            idx = idx[np.argsort(lbs[idx])][:REFINE_BATCH]
            self._add(0.5 * (g.tau[idx] + g.tau[idx + 1]))
        root_lb = float(np.min(self.root_lb))
        done = root_lb >= self.upper - self.tol()
        if not exact or done:
            return self.best[1], min(root_lb, self.upper), done
        return self._branch_and_bound(lo0, hi0, root_lb, max_nodes)

    def _bound(self, lo: np.ndarray, hi: np.ndarray) -> tuple[float, int, int]:
        """A box's bound over the live deadline intervals (those whose root bound is below the
        incumbent), its candidates, and a branching rule (device, split: children get
        hi_k = split and lo_k = split + 1)."""
        live = np.flatnonzero(self.root_lb < self.upper - self.tol())
        if live.size == 0:
            return math.inf, -1, -1
        lbs, lp_l, lp_r, left, right = self._interval_lb(self.grid, lo, hi, live)
        a = int(np.argmin(lbs))
        lb = float(lbs[a])
        if not np.isfinite(lb):
            return math.inf, -1, -1
        branch = None
        for lp, g in ((lp_r, right), (lp_l, left)):
            if not np.isfinite(lp.value[a]):
                continue
            levels = self._candidate(g, a, lo, lp)
            self._try(levels, g)
            if branch is None and lp.has_break[a]:
                b = int(lp.brk[a])
                branch = (int(g.dev[a, b]), int(g.lvl[a, b]))
        if branch is None:  # integral LP at both ends: split the widest device around it
            levels = self._candidate(right, a, lo, lp_r)
            kb = int(np.argmax(hi - lo))
            branch = (kb, int(levels[kb]) if levels[kb] < hi[kb] else int(levels[kb]) - 1)
        return lb, branch[0], branch[1]

    def _branch_and_bound(self, lo0: np.ndarray, hi0: np.ndarray, root_lb: float,
                          max_nodes: int) -> tuple[np.ndarray, float, bool]:
        """Best-first branch and bound over boxes lo ≤ level ≤ hi (see the module notes)."""
        counter = 0
        lb, kb, split = self._bound(lo0, hi0)
        heap: list[tuple[float, int, np.ndarray, np.ndarray, int, int]] = []
        if lb < self.upper - self.tol():
            heap.append((max(lb, root_lb), counter, lo0, hi0, kb, split))
        finished = True
        while heap:
            lb, _, lo, hi, kb, split = heap[0]
            if lb >= self.upper - self.tol():
                break  # best-first: every open box is at least as bad
            if self.nodes >= max_nodes:
                finished = False
                break
            heapq.heappop(heap)
            self.nodes += 1
            for side in (0, 1):
                clo, chi = lo.copy(), hi.copy()
                if side == 0:
                    chi[kb] = split
                else:
                    clo[kb] = split + 1
                if np.array_equal(clo, chi):
                    self.evaluate(clo)
                    continue
                c_lb, c_kb, c_split = self._bound(clo, chi)
                c_lb = max(c_lb, lb)  # a child's optimum is no better than its parent's bound
                if c_lb < self.upper - self.tol():
                    counter += 1
                    heapq.heappush(heap, (c_lb, counter, clo, chi, c_kb, c_split))
        if finished:
            lower = self.upper
        else:
            lower = min(h[0] for h in heap)
        return self.best[1], min(lower, self.upper), finished
