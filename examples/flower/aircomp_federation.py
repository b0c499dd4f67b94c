"""A Flower federation whose aggregation goes over a planned wireless uplink.

Three clients fit a small torch regression model (each on its own synthetic data) with
Flower's FedAvg (Message API). One line wraps the strategy so that every round's aggregate
goes through fedopt's AirComp uplink of the ``small`` instance — receive beamformers
re-optimized on each round's channel — and each round's metrics say what the round cost over
the air. The script prints those metrics next to the clients' evaluation loss.

Run (from the repository root, with ``pip install "fedopt[flower]"``)::

    python examples/flower/aircomp_federation.py                  # AirComp, symbol level
    python examples/flower/aircomp_federation.py --mode equivalent
    python examples/flower/aircomp_federation.py --no-uplink      # plain FedAvg, for comparison
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from fedopt.flower import AirCompStrategy
from fedopt.solvers.flower import aircomp_uplink

FEATURES, LOCAL_STEPS, LR = 8, 10, 0.05


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 1))


def client_data(pid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Client ``pid``'s data: 32 (pid + 1) examples of y = sin(x · w_pid) + noise."""
    g = torch.Generator().manual_seed(pid)
    n = 32 * (pid + 1)
    x = torch.randn(n, FEATURES, generator=g)
    w = torch.linspace(-1.0, 1.0, FEATURES) + 0.3 * pid  # non-IID: one optimum per client
    return x, torch.sin(x @ w)[:, None] + 0.05 * torch.randn(n, 1, generator=g)


def _loss(model: torch.nn.Module, pid: int) -> float:
    x, y = client_data(pid)
    with torch.no_grad():
        return float(torch.mean((model(x) - y) ** 2))


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    torch.set_num_threads(1)
    pid = int(context.node_config["partition-id"])
    model = make_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x, y = client_data(pid)
    for _ in range(LOCAL_STEPS):
        opt.zero_grad()
        torch.mean((model(x) - y) ** 2).backward()
        opt.step()
    metrics = {"num-examples": len(y), "train-loss": _loss(model, pid),
               "partition-id": pid}  # partition-id: this client's device on the uplink
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()),
                               "metrics": MetricRecord(metrics)}), reply_to=msg)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    torch.set_num_threads(1)
    pid = int(context.node_config["partition-id"])
    model = make_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    metrics = {"num-examples": len(client_data(pid)[1]), "eval-loss": _loss(model, pid)}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


def server_app(args: argparse.Namespace, out: dict) -> ServerApp:
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(min_train_nodes=args.clients, min_evaluate_nodes=args.clients,
                          min_available_nodes=args.clients)
        if not args.no_uplink:  # the one line: FedAvg over the air
            strategy = AirCompStrategy(strategy, uplink=aircomp_uplink(
                args.instance, seed=args.seed, mode=args.mode, clients=args.clients),
                device_key="partition-id")
        out["result"] = strategy.start(grid=grid, initial_arrays=ArrayRecord(
            make_model().state_dict()), num_rounds=args.rounds)

    return server


def report(result) -> None:
    """One line per round: the clients' evaluation loss and the uplink's metrics."""
    print(f"{'round':>5} {'eval loss':>10} {'airtime ms':>11} {'latency ms':>11} "
          f"{'energy mJ':>10} {'|g^-g|^2/|g|^2':>15}")
    for t in sorted(result.train_metrics_clientapp):
        train_m = result.train_metrics_clientapp[t]
        loss = result.evaluate_metrics_clientapp.get(t, {}).get("eval-loss", float("nan"))
        cells = [1e3 * train_m.get("uplink-airtime-s", np.nan),
                 1e3 * train_m.get("uplink-latency-s", np.nan),
                 1e3 * train_m.get("uplink-energy-j", np.nan),
                 train_m.get("uplink-relative-error", np.nan)]
        print(f"{t:>5} {loss:>10.4f} {cells[0]:>11.4f} {cells[1]:>11.3f} {cells[2]:>10.4f} "
              f"{cells[3]:>15.3e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instance", default="small", help="preset or instance file (K clients)")
    ap.add_argument("--clients", type=int, default=3, help="must be the instance's K")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mode", choices=("exact", "equivalent"), default="exact")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-uplink", action="store_true", help="plain FedAvg (no physical layer)")
    args = ap.parse_args()
    out: dict = {}
    run_simulation(server_app(args, out), client, num_supernodes=args.clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    report(out["result"])


if __name__ == "__main__":
    main()
