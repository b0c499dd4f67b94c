"""``fedopt solve``: solve an instance and print (or save) a plan."""

from __future__ import annotations

import contextlib
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from cli._common import OutputFormat, print_json, user_errors


class Method(str, Enum):
    """Methods of ``fedopt solve``."""

    beamforming = "beamforming"
    centroid = "centroid"
    sdr = "sdr"
    random = "random"
    mrc = "mrc"
    eigen = "eigen"


@contextlib.contextmanager
def progress(label: str, enabled: bool = True):
    """A transient spinner on stderr; yields a callback(record) that updates its text."""
    if not enabled:
        yield lambda record: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(label, total=None)

        def update(record: dict) -> None:
            stage = record.get("stage")
            bar.update(task, description=f"{label}: stage {stage}, "
                                         f"Σ MSE {record.get('objective', float('nan')):.4g}")

        yield update


def default_rank(instance, streams: int) -> int:
    """Largest candidate rank whose AirComp round latency meets the budget (or the largest)."""
    ranks = sorted(instance.lora.ranks)
    budget = instance.constraints.latency_budget_s
    if budget is None:
        return ranks[-1]
    ok = [r for r in ranks if instance.aircomp_latency_s(r, streams) <= budget]
    return ok[-1] if ok else ranks[0]


def solve(
    source: Annotated[str, typer.Argument(help="Instance file (.yaml/.json) or preset name.")]
    = "default",
    method: Annotated[Method, typer.Option("--method", "-m", help="Beamforming method.")]
    = Method.beamforming,
    streams: Annotated[int | None, typer.Option(
        "--streams", "-L", min=1, help="Spatial streams L (default: the largest the instance "
        "allows; 1 for sdr).")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Channel seed (and solver seed).")]
    = 0,
    round_: Annotated[int, typer.Option("--round", min=0, help="Block-fading round drawn.")] = 0,
    channel: Annotated[Path | None, typer.Option(
        "--channel", help="Use this channel .npz instead of drawing one.")] = None,
    rank: Annotated[int | None, typer.Option(
        "--rank", min=1, help="LoRA rank recorded in the plan (default: the largest candidate "
        "rank meeting the latency budget).")] = None,
    randomizations: Annotated[int, typer.Option(
        "--randomizations", min=0, help="Gaussian randomizations of the SDR method.")] = 200,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Write the plan (.json or .npz).")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")]
    = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Solve an instance's receive beamforming on one channel draw and print a plan summary."""
    with user_errors():
        import numpy as np

        from fedopt.channel import Channel
        from fedopt.errors import InvalidInstanceError
        from fedopt.instance import load_instance
        from fedopt.plan import Plan
        from solvers.beamforming import beamforming_problem, solve_beamforming

        inst = load_instance(source)
        if streams is None:
            streams = 1 if method is Method.sdr else max(inst.aircomp.streams)
        if method is Method.sdr and streams != 1:
            raise InvalidInstanceError(
                f"--streams: got L = {streams}, the sdr method solves L = 1 only; use "
                "--streams 1 or another method")
        inst.validate_streams(streams)
        r = inst.validate_rank(rank) if rank is not None else default_rank(inst, streams)
        ch = Channel.load(channel, instance=inst) if channel is not None else None
        problem = beamforming_problem(inst, streams, channel=ch, seed=seed, round=round_)
        opts = {"randomizations": randomizations} if method is Method.sdr else {}
        with progress(f"solving {inst.name} ({method.value}, L = {streams})",
                      enabled=not quiet and fmt is OutputFormat.text) as cb:
            kwargs = {"callback": cb} if method is Method.beamforming else {}
            result = solve_beamforming(problem, method.value, rng=seed, **kwargs, **opts)
        mse = result.objective_per_subcarrier
        bound = result.bound_per_subcarrier
        scale = np.sqrt(mse / inst.noise_power_w)  # ‖A_m‖ at full power: MSE = σ²‖A‖²
        plan = Plan(
            method=method.value, rank=r, streams=streams, receive_beamformers=result.solution,
            power_scale=scale, instance_name=inst.name, instance_digest=inst.digest(),
            channel_seed=None if ch is not None else seed,
            channel_round=None if ch is not None else round_,
            metadata={"objective": result.objective, "status": result.status.value,
                      "wall_time_s": result.wall_time_s},
        )
        if output is not None:
            plan.save(output)
        latency = float(inst.aircomp_latency_s(r, streams))
        summary = {
            "method": method.value,
            "status": result.status.value,
            "message": result.message,
            "instance": inst.name,
            "streams": streams,
            "rank": r,
            "seed": seed,
            "round": round_,
            "objective": result.objective,
            "mse": mse.tolist(),
            "lower_bound": bound.tolist(),
            "bound_ratio": (mse / bound).tolist(),
            "airtime_s": float(inst.airtime_s(r, streams)),
            "latency_s": latency,
            "latency_budget_s": inst.constraints.latency_budget_s,
            "iterations": result.iterations,
            "wall_time_s": result.wall_time_s,
            "plan": str(output) if output is not None else None,
        }
        if fmt is OutputFormat.json:
            print_json(summary)
        else:
            typer.echo(render_summary(summary, inst))


def render_summary(s: dict, inst) -> str:
    """Readable plan summary."""
    import numpy as np

    from fedopt.units import watt_to_dbm

    mse = np.asarray(s["mse"])
    ratio = np.asarray(s["bound_ratio"])
    budget = s["latency_budget_s"]
    lat = f"{s['latency_s'] * 1e3:.1f} ms" + (
        f" (budget {budget * 1e3:.0f} ms, {'met' if s['latency_s'] <= budget else 'EXCEEDED'})"
        if budget is not None else "")
    rows = [
        ("plan", f"{s['method']} on {s['instance']}: L = {s['streams']} streams, rank r = "
                 f"{s['rank']}"),
        ("status", f"{s['status']} — {s['message']}"),
        ("channel", f"seed {s['seed']}, round {s['round']}"),
        ("Σ_m MSE_m", f"{s['objective']:.4e} (unit-power symbols; "
                      f"{10 * np.log10(s['objective']):.2f} dB)"),
        ("MSE per subcarrier", f"min {mse.min():.3e}, median {np.median(mse):.3e}, "
                               f"max {mse.max():.3e}"),
        ("MSE / lower bound", f"median {np.median(ratio):.3f}, max {ratio.max():.3f} "
                              f"(1 = certified optimal)"),
        ("noise per subcarrier", f"{float(watt_to_dbm(inst.noise_power_w)):.1f} dBm"),
        ("airtime per round", f"{s['airtime_s'] * 1e3:.2f} ms "
                              f"({inst.ofdm_symbols(s['rank'], s['streams'])} OFDM symbols)"),
        ("round latency", lat),
        ("solve time", f"{s['wall_time_s']:.2f} s, {s['iterations']} iterations"),
    ]
    if s["plan"]:
        rows.append(("plan written", s["plan"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
