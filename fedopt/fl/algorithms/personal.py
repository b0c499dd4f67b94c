"""Algorithms where every client keeps its own LoRA (spec 05 §3 ``mira``): local training and
MIRA, federated multi-task LoRA (arXiv 2410.15524).

Client k holds its own LoRA vector θ_k (checkpointed), runs E local steps from it and forms its
update Δ_k = θ_k − θ_k^{(E)}.

- ``local``: θ_k ← θ_k^{(E)}; nothing is sent (the reference of personalization).
- ``mira``: the server applies the graph step of the round's clients,

      Δ_k ← Δ_k − ηλ Σ_l a_kl (Δ_k − Δ_l) = (1 − ηλ d_k) Δ_k + ηλ N_k,   N_k = Σ_l a_kl Δ_l,

  d_k = Σ_l a_kl, and θ_k ← θ_k − Δ_k. The weights a_kl (``LoopConfig.mira_graph``): ``task``
  (1 for two clients of one task, from the data's task labels: the default, since the testbed
  knows them), ``complete``, ``similarity`` (max(0, cos(Δ̂_k, Δ̂_l)) of the updates as the server
  receives them) or a K × K matrix. a = 0 is local training; the complete graph with ηλ·K = 1
  gives every client the mean update (tested).

Every client knows its own Δ_k exactly, so it applies (1 − ηλ d_k) Δ_k itself and the server
only sends N_k. How N_k is formed depends on the uplink:

- over an uplink that delivers every client's own update (``deliver``: ideal, digital with SOFT
  over FDMA, where the sparsified Δ̂_l arrive), N_k = Σ_l a_kl Δ̂_l for any graph;
- over AirComp the server only receives sums, so the graph must be a union of cliques (``task``
  or ``complete``): one over-the-air aggregation per cluster c, in its own time slot (the other
  devices silent; ``AirCompAggregator.aggregate(..., members=c)``), gives Ŝ_c ≈ Σ_{l∈c} Δ_l and
  N_k = Ŝ_c − Δ_k. The round's airtime and energy are the sums over the slots; the instance's
  ``payloads_per_round`` is the number of clusters, so the planner sees that airtime.

The global loss is the φ-weighted mean of the clients' own models on the global held-out set,
the per-client loss each client's own model on its own held-out text.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError, PlanError
from fedopt.fl.aggregators import AggregationResult
from fedopt.fl.algorithms.base import Algorithm, SophiaStates

__all__ = ["LocalTraining", "MIRA", "mira_graph"]


class _OwnModels(Algorithm):
    personal = True

    def bind(self, run: Any, theta: np.ndarray) -> None:
        super().bind(run, theta)
        self.params = self.trained_parameters(run, "AB")
        k = run.data.n_clients
        self.own = np.tile(theta, (k, 1))
        self.sophia = (SophiaStates(k, theta.size) if run.cfg.optimizer == "sophia" else None)

    def client_theta(self, theta: np.ndarray, k: int) -> np.ndarray:
        return self.own[k]

    def _train(self, run: Any, t: int, k: int) -> tuple[np.ndarray, np.ndarray, float]:
        """(start, end, first-batch loss) of client k's local steps from its own θ_k."""
        start = self.own[k].copy()
        run.load(start)
        loss = self.local_steps(run, self.params, t, k, self.sophia)
        return start, run.flat(), loss

    def server_update(self, run: Any, theta: np.ndarray, estimate: np.ndarray,
                      t: int) -> np.ndarray:
        """The run's θ: the φ-weighted mean of the clients' own models (a summary; nobody
        trains from it)."""
        return run.phi @ self.own / run.phi.sum()

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {} if self.sophia is None else self.sophia.state_dict()
        return {**out, "own": self.own.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if self.sophia is not None:
            self.sophia.load_state_dict(state)
        self.own = np.array(state["own"], dtype=float)


class LocalTraining(_OwnModels):
    """Every client trains its own LoRA; nothing travels."""

    name = "local"

    def bind(self, run: Any, theta: np.ndarray) -> None:
        super().bind(run, theta)
        self.payload_size = 0

    def client_update(self, run: Any, theta: np.ndarray, t: int,
                      k: int) -> tuple[np.ndarray, float]:
        _, end, loss = self._train(run, t, k)
        self.own[k] = end
        return np.zeros(0), loss


def mira_graph(spec: Any, client_tasks: Any, n_clients: int) -> np.ndarray:
    """The K × K weights a_kl (zero diagonal) of ``LoopConfig.mira_graph`` for these clients
    (``similarity`` is formed per round from the updates: returns None)."""
    if isinstance(spec, str):
        if spec == "similarity":
            return None
        if spec == "complete":
            a = np.ones((n_clients, n_clients))
        else:
            tasks = list(client_tasks or [])
            if len(tasks) != n_clients or any(t is None or t == "" for t in tasks):
                raise InvalidArgumentError(
                    "mira_graph: 'task' needs every client's task label, but the data has "
                    f"{len(tasks)} labels for {n_clients} clients (the domain-shift testbed "
                    "labels them); use 'similarity' or 'complete'")
            a = np.array([[float(x == y) for y in tasks] for x in tasks])
    else:
        a = np.array(spec, dtype=float)
        if a.shape != (n_clients, n_clients):
            raise InvalidArgumentError(
                f"mira_graph: a {a.shape[0]} x {a.shape[1]} matrix for {n_clients} clients; "
                f"expected {n_clients} x {n_clients}")
    np.fill_diagonal(a, 0.0)
    return a


def _cliques(a: np.ndarray) -> list[np.ndarray] | None:
    """The clusters of a graph that is a union of cliques of unit weight, else None."""
    if not np.all((a == 0) | (a == 1)):
        return None
    linked = a + np.eye(a.shape[0])
    groups = {tuple(np.flatnonzero(row)) for row in linked}
    flat = sorted(i for g in groups for i in g)
    return ([np.array(g) for g in sorted(groups)] if flat == list(range(a.shape[0]))
            else None)


class MIRA(_OwnModels):
    """Federated multi-task LoRA: own models, updates pulled together on a task graph."""

    name = "mira"

    def bind(self, run: Any, theta: np.ndarray) -> None:
        super().bind(run, theta)
        self.graph = mira_graph(run.cfg.mira_graph, run.data.client_tasks, run.data.n_clients)
        self.deltas = np.zeros_like(self.own)
        if not callable(getattr(run.aggregator, "deliver", None)):
            self._check_cliques()

    def _check_cliques(self) -> list[np.ndarray]:
        clusters = None if self.graph is None else _cliques(self.graph)
        if clusters is None:
            raise PlanError(
                "mira_graph: over AirComp the server receives only sums, so the graph must be "
                "a union of cliques ('task' or 'complete'); use an uplink that delivers every "
                "update (ideal, digital) for 'similarity' or weighted graphs")
        return clusters

    def client_update(self, run: Any, theta: np.ndarray, t: int,
                      k: int) -> tuple[np.ndarray, float]:
        start, end, loss = self._train(run, t, k)
        self.deltas[k] = start - end
        return self.deltas[k].copy(), loss

    def aggregate(self, run: Any, payloads: np.ndarray, t: int) -> AggregationResult:
        """N_k for every client (kept for the server step); the round's accounting."""
        agg = run.aggregator
        if callable(getattr(agg, "deliver", None)):
            from fedopt.fl.config import round_rng

            delivered, res = agg.deliver(payloads, run.phi, t, round_rng(run.cfg.seed, t))
            a = self.graph if self.graph is not None else _similarity(delivered)
            self.degree, self.neighbours = a.sum(axis=1), a @ delivered
            return res
        return self._per_cluster(run, payloads, t)

    def _per_cluster(self, run: Any, payloads: np.ndarray, t: int) -> AggregationResult:
        clusters = self._check_cliques()
        k = payloads.shape[0]
        self.degree, self.neighbours = np.zeros(k), np.zeros_like(payloads)
        parts = []
        for j, idx in enumerate(clusters):
            rng = np.random.default_rng(np.random.SeedSequence(
                int(run.cfg.seed), spawn_key=(3, int(t), j)))
            res = run.aggregator.aggregate(payloads, np.ones(k), t, rng, members=idx)
            total = idx.size * np.asarray(res.estimate)
            self.degree[idx] = idx.size - 1
            self.neighbours[idx] = total[None, :] - payloads[idx]
            parts.append(res)
        return _combined(parts, k)

    def server_update(self, run: Any, theta: np.ndarray, estimate: np.ndarray,
                      t: int) -> np.ndarray:
        step = run.cfg.mira_step
        mixed = (1.0 - step * self.degree)[:, None] * self.deltas + step * self.neighbours
        self.own = self.own - mixed
        return super().server_update(run, theta, estimate, t)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "graph": None if self.graph is None
                else self.graph.tolist()}


def _similarity(updates: np.ndarray) -> np.ndarray:
    """a_kl = max(0, cos(Δ_k, Δ_l)), zero diagonal."""
    norms = np.linalg.norm(updates, axis=1)
    unit = updates / np.where(norms > 0, norms, 1.0)[:, None]
    a = np.maximum(unit @ unit.T, 0.0)
    np.fill_diagonal(a, 0.0)
    return a


def _combined(parts: list[AggregationResult], k: int) -> AggregationResult:
    """One round's accounting from its per-cluster slots: errors, airtime and energy add up."""
    def total(name: str) -> float | None:
        vals = [getattr(p, name) for p in parts]
        return None if any(v is None for v in vals) else float(sum(vals))

    energy = [p.energy_j for p in parts]
    airtime = total("airtime_s")
    lat = [p.latency_s for p in parts]
    latency = (None if any(v is None for v in lat) or airtime is None
               else float(lat[0] - parts[0].airtime_s + airtime))
    return AggregationResult(
        estimate=np.concatenate([p.estimate for p in parts]),
        exact=np.concatenate([p.exact for p in parts]),
        error=float(sum(p.error for p in parts)), predicted_error=total("predicted_error"),
        airtime_s=airtime, info={"mode": "per-cluster", "slots": len(parts)},
        latency_s=latency,
        energy_j=None if any(e is None for e in energy) else np.sum(energy, axis=0))
