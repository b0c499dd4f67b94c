"""A real Flower federation with the uplink in place (fedopt.flower + fedopt.solvers.flower).

Flower's simulation engine (``flwr.simulation.run_simulation``, ray backend, one CPU per client,
no GPU) runs 3 ClientApps for 2 rounds of least-squares regression on a tiny numpy model; the
ServerApp wraps FedAvg in :class:`fedopt.flower.AirCompStrategy` over the ``small`` instance's
AirComp uplink (K = 3, the instance's own noise). The oracle is a replay without Flower: the
same local steps and the same uplink (same seed, same devices), round by round.

One simulation per API (Message API, the recommended one; classic ``server_fn`` API), each
13-16 s on a 2-core CPU, mostly ray: ``ray.init`` about 6.5 s, its shutdown 1.4 s, two actor
processes importing flwr. Each test checks that ray is shut down and no ray process is left
running under this one. Marked ``slow`` (CI runs them; ``-m "not slow"`` skips them).
"""

from __future__ import annotations

import numpy as np
import psutil
import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from fedopt.flower import AirCompStrategy  # noqa: E402
from fedopt.solvers.flower import aircomp_uplink  # noqa: E402

CLIENTS, ROUNDS, DIM = 3, 2, 6
LR, STEPS = 0.1, 5
BACKEND = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
           "init_args": {"num_cpus": 2, "num_gpus": 0}}


def client_data(pid: int) -> tuple[np.ndarray, np.ndarray]:
    """Client ``pid``'s regression data: y = X w* + noise, 8 (pid + 1) examples."""
    rng = np.random.default_rng(100 + pid)
    n = 8 * (pid + 1)
    x = rng.standard_normal((n, DIM))
    w_star = np.linspace(-1.0, 1.0, DIM) + 0.2 * pid  # non-IID: each client its own optimum
    return x, x @ w_star + 0.05 * rng.standard_normal(n)


def local_train(w: np.ndarray, b: np.ndarray, pid: int) -> tuple[np.ndarray, np.ndarray]:
    """STEPS full-batch gradient steps on client ``pid``'s mean squared error."""
    x, y = client_data(pid)
    for _ in range(STEPS):
        r = x @ w + b - y
        w, b = w - LR * 2 * x.T @ r / len(y), b - LR * 2 * np.mean(r)
    return w, b


def loss(w: np.ndarray, b: np.ndarray, pid: int) -> float:
    x, y = client_data(pid)
    return float(np.mean((x @ w + b - y) ** 2))


def initial() -> dict[str, np.ndarray]:
    return {"w": np.zeros(DIM), "b": np.zeros(1)}


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    arrays = msg.content["arrays"]
    w, b = local_train(arrays["w"].numpy(), arrays["b"].numpy(), pid)
    metrics = {"num-examples": len(client_data(pid)[1]), "train-loss": loss(w, b, pid),
               "partition-id": pid}
    return Message(RecordDict({"arrays": ArrayRecord({"w": Array(w), "b": Array(b)}),
                               "metrics": MetricRecord(metrics)}), reply_to=msg)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    arrays = msg.content["arrays"]
    value = loss(arrays["w"].numpy(), arrays["b"].numpy(), pid)
    return Message(RecordDict({"metrics": MetricRecord({
        "num-examples": len(client_data(pid)[1]), "eval-loss": value})}), reply_to=msg)


def _server(out: dict) -> ServerApp:
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        uplink = aircomp_uplink("small", seed=3, clients=CLIENTS)
        strategy = AirCompStrategy(
            FedAvg(min_train_nodes=CLIENTS, min_evaluate_nodes=CLIENTS,
                   min_available_nodes=CLIENTS),
            uplink=uplink, device_key="partition-id")
        arrays = ArrayRecord({k: Array(v) for k, v in initial().items()})
        out["result"] = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=ROUNDS,
                                       timeout=300)
        out["history"] = strategy.history

    return server


def _replay() -> tuple[dict[str, np.ndarray], list[float]]:
    """The federation without Flower: local steps, deltas, the same uplink's estimate."""
    uplink = aircomp_uplink("small", seed=3)
    theta, errors = initial(), []
    for t in range(ROUNDS):
        new = [local_train(theta["w"], theta["b"], pid) for pid in range(CLIENTS)]
        g = np.array([np.concatenate([w - theta["w"], b - theta["b"]]) for w, b in new])
        phi = np.array([len(client_data(pid)[1]) for pid in range(CLIENTS)], dtype=float)
        res = uplink.aggregate(g, phi, t)
        flat = np.concatenate([theta["w"], theta["b"]]) + res.estimate
        theta, errors = {"w": flat[:DIM], "b": flat[DIM:]}, [*errors, res.error]
    return theta, errors


def _ray_processes() -> list[str]:
    """The ray processes still running under this one (a zombie, dead but not yet reaped by
    its parent, runs nothing and is not counted)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "ray" in " ".join(p.cmdline()).lower():
                out.append(f"{p.pid} {p.name()}")
        except psutil.Error:  # ended meanwhile, or a zombie
            continue
    return out


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")  # ray's note on accelerator env vars
def test_flower_simulation_with_aircomp_uplink():
    from flwr.simulation import run_simulation

    out: dict = {}
    run_simulation(_server(out), client, num_supernodes=CLIENTS, backend_config=BACKEND)
    import ray

    assert not ray.is_initialized()
    assert _ray_processes() == []
    result = out["result"]
    want, errors = _replay()
    for key in ("w", "b"):
        # identical arithmetic in the workers and here; FedAvg's average of the K identical
        # estimates multiplies by Σ_k φ_k/Σφ, which is 1 to a few ulp
        np.testing.assert_allclose(result.arrays[key].numpy(), want[key], rtol=1e-12,
                                   atol=1e-14)
    for t in range(1, ROUNDS + 1):
        m = result.train_metrics_clientapp[t]
        assert m["uplink-airtime-s"] > 0 and m["uplink-energy-j"] > 0
        assert m["uplink-latency-s"] > m["uplink-airtime-s"]
        assert m["uplink-reals"] == DIM + 1
        assert "partition-id" not in m and "train-loss" in m
        # the same noise draws as the replay: the error matches to rounding
        assert m["uplink-error"] == pytest.approx(errors[t - 1], rel=1e-9)
        assert m["uplink-error"] > 0  # the instance's noise is on
    losses = [result.evaluate_metrics_clientapp[t]["eval-loss"] for t in (1, 2)]
    start = np.average([loss(np.zeros(DIM), np.zeros(1), p) for p in range(CLIENTS)],
                       weights=[8 * (p + 1) for p in range(CLIENTS)])
    assert start > losses[0] > losses[1]
    assert all(sorted(h["devices"]) == [0, 1, 2] for h in out["history"])


def _classic_apps(out: dict) -> tuple[ServerApp, ClientApp]:
    """The same federation in Flower's classic API (server_fn / NumPyClient)."""
    from flwr.client import NumPyClient
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg as ClassicFedAvg

    class Regression(NumPyClient):
        def __init__(self, pid: int):
            self.pid = pid

        def fit(self, parameters, config):
            w, b = local_train(parameters[0], parameters[1], self.pid)
            n = len(client_data(self.pid)[1])
            return [w, b], n, {"partition-id": self.pid, "train-loss": loss(w, b, self.pid)}

    def client_fn(context: Context):
        return Regression(int(context.node_config["partition-id"])).to_client()

    def evaluate_fn(server_round, parameters, config):
        out.setdefault("params", {})[server_round] = [np.array(p) for p in parameters]
        return None

    def server_fn(context: Context) -> ServerAppComponents:
        inner = ClassicFedAvg(fraction_evaluate=0.0, min_fit_clients=CLIENTS,
                              min_available_clients=CLIENTS, evaluate_fn=evaluate_fn,
                              initial_parameters=ndarrays_to_parameters(list(initial().values())))
        strategy = AirCompStrategy(inner, uplink=aircomp_uplink("small", seed=3),
                                   device_key="partition-id")
        out["strategy"] = strategy
        config = ServerConfig(num_rounds=ROUNDS, round_timeout=300)
        return ServerAppComponents(strategy=strategy, config=config)

    return ServerApp(server_fn=server_fn), ClientApp(client_fn=client_fn)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")  # ray's note on accelerator env vars
def test_flower_simulation_classic_api():
    from flwr.simulation import run_simulation

    from fedopt.flower import AirCompClassicStrategy

    out: dict = {}
    server, client_app = _classic_apps(out)
    run_simulation(server, client_app, num_supernodes=CLIENTS, backend_config=BACKEND)
    assert _ray_processes() == []
    assert isinstance(out["strategy"], AirCompClassicStrategy)
    want, errors = _replay()
    got = out["params"][ROUNDS]
    # the same oracle and tolerance as the Message API (classic FedAvg divides Σ φ_k x by Σφ)
    np.testing.assert_allclose(got[0], want["w"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got[1], want["b"], rtol=1e-12, atol=1e-14)
    history = out["strategy"].history
    assert [h["round"] for h in history] == [1, 2]
    assert [h["uplink-error"] for h in history] == pytest.approx(errors, rel=1e-9)
