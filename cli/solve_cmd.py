"""``fedopt solve``: solve an instance and print (or save) a plan."""

from __future__ import annotations

import contextlib
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from fedopt.cli._common import OutputFormat, err, print_json, user_errors


class Method(str, Enum):
    """Methods of ``fedopt solve``: planners (choose r, L and beamformers) and beamforming-only
    methods (one L; the rank block picks r)."""

    airfl_lora = "airfl-lora"
    alternating = "alternating"
    exhaustive = "exhaustive"
    fixed_rank = "fixed-rank"
    single_stream = "single-stream"
    centroid_plan = "centroid-plan"
    random_plan = "random-plan"
    beamforming = "beamforming"
    centroid = "centroid"
    sdr = "sdr"
    random = "random"
    mrc = "mrc"
    eigen = "eigen"
    tsfa = "tsfa"


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
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in record.items() if k in ("streams", "rank", "gap"))
            bar.update(task, description=f"{label}: {shown}")

        yield update


def solve(
    source: Annotated[str, typer.Argument(help="Instance file (.yaml/.json) or preset name.")]
    = "default",
    method: Annotated[Method, typer.Option("--method", "-m", help="Planner or beamforming "
                                           "method.")] = Method.airfl_lora,
    streams: Annotated[int | None, typer.Option(
        "--streams", "-L", min=1, help="Spatial streams L (planners: restrict the search to this "
        "L; beamforming methods: default the largest the instance allows, 1 for sdr).")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Channel seed (and solver seed).")]
    = 0,
    round_: Annotated[int, typer.Option("--round", min=0, help="Block-fading round drawn.")] = 0,
    channel: Annotated[Path | None, typer.Option(
        "--channel", help="Use this channel .npz instead of drawing one.")] = None,
    rank: Annotated[int | None, typer.Option(
        "--rank", min=1, help="Fix the LoRA rank (fixed-rank default: the largest candidate "
        "that meets the latency budget).")] = None,
    randomizations: Annotated[int, typer.Option(
        "--randomizations", min=0, help="Gaussian randomizations of the SDR method.")] = 200,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Write the plan (.json or .npz).")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")]
    = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    sparsity: Annotated[float, typer.Option(
        "--sparsity", help="tsfa: nominal sparsity ρ_nom in [0, 1) of the offline stage.")] = 0.0,
    samples: Annotated[int, typer.Option(
        "--samples", min=1, help="tsfa: channel rounds of the expected-latency estimate.")]
    = 100,
) -> None:
    """Plan rank, streams and receive beamformers (AirComp) or rank, sparsity and bandwidth
    (``--method tsfa``, digital uplink) for an instance and print the plan."""
    if method is Method.tsfa:
        if streams is not None:
            err("error: --streams: the tsfa method plans a digital (FDMA) uplink, which has no "
                "spatial streams; drop --streams")
            raise typer.Exit(code=2)
        _solve_tsfa(source, seed, round_, sparsity, samples, output, fmt, quiet, rank, channel)
        return
    with user_errors():
        from fedopt.channel import Channel
        from fedopt.errors import InvalidInstanceError
        from fedopt.instance import load_instance
        from fedopt.solvers.planner import plan

        inst = load_instance(source)
        if method is Method.sdr:
            if streams not in (None, 1):
                raise InvalidInstanceError(
                    f"--streams: got L = {streams}, the sdr method solves L = 1 only; use "
                    "--streams 1 or another method")
            streams = 1
        if streams is not None:
            inst.validate_streams(streams)
        ch = Channel.load(channel, instance=inst) if channel is not None else None
        opts = {"randomizations": randomizations} if method is Method.sdr else {}
        with progress(f"solving {inst.name} ({method.value})",
                      enabled=not quiet and fmt is OutputFormat.text) as cb:
            result = plan(inst, method.value, channel=ch, seed=seed, round=round_,
                          streams=None if streams is None else [streams], rank=rank,
                          callback=cb, **opts)
        p = result.solution
        if output is not None:
            p.save(output)
        summary = plan_summary(result, inst, seed=seed, round_=round_, output=output)
        if fmt is OutputFormat.json:
            print_json(summary)
        else:
            typer.echo(render_summary(summary, inst))


def _solve_tsfa(source: str, seed: int, round_: int, sparsity: float, samples: int,
                output: Path | None, fmt: OutputFormat, quiet: bool, rank: int | None,
                channel: Path | None) -> None:
    with user_errors():
        import numpy as np

        from fedopt.channel import Channel
        from fedopt.instance import load_instance
        from fedopt.solvers.tsfa import plan_tsfa

        inst = load_instance(source)
        ranks = None if rank is None else [inst.validate_rank(rank)]
        ch = Channel.load(channel, instance=inst) if channel is not None else None
        with progress(f"solving {inst.name} (tsfa)",
                      enabled=not quiet and fmt is OutputFormat.text):
            result = plan_tsfa(inst, seed=seed, round=round_, nominal_sparsity=sparsity,
                               samples=samples, ranks=ranks, channel=ch)
        p = result.solution
        if output is not None:
            p.save(output)
        meta = p.metadata
        summary = {
            "method": "tsfa", "status": result.status.value, "message": result.message,
            "instance": inst.name, "rank": p.rank, "seed": seed, "round": round_,
            "objective": result.objective, "bound_terms": dict(result.terms),
            "bandwidth_hz": p.bandwidth_hz.tolist(), "sparsity": p.sparsity.tolist(),
            "kept_components": meta["kept_components"], "latency_s": meta["latency_s"],
            "expected_latency_s": meta["expected_latency_s"],
            "latency_budget_s": meta["latency_budget_s"],
            "expected_latency_per_rank_s": dict(zip(
                [str(r) for r in meta["selection"]["ranks"]],
                meta["selection"]["expected_latency_s"], strict=True)),
            "wall_time_s": result.wall_time_s,
            "plan": str(output) if output is not None else None,
        }
        if fmt is OutputFormat.json:
            print_json(summary)
            return
        bw = np.asarray(summary["bandwidth_hz"])
        lat = summary["expected_latency_per_rank_s"]
        rows = [
            ("plan", f"tsfa on {inst.name}: rank r = {p.rank}, nominal sparsity "
                     f"{summary['sparsity'][0]:.3g} ({summary['kept_components']} of {p.rank} "
                     "components kept)"),
            ("bound", f"{summary['objective']:.4g} = " + " + ".join(
                f"{v:.3g} {k}" for k, v in summary["bound_terms"].items())),
            ("status", f"{summary['status']} — {summary['message']}"),
            ("expected latency", f"{summary['expected_latency_s']:.4g} s per round (average "
                                 f"budget {summary['latency_budget_s']:.4g} s)"),
            ("  per rank", ", ".join(f"r={r}: {v:.3g} s" for r, v in lat.items())),
            ("this round", f"seed {seed}, round {round_}: min-max latency "
                           f"{summary['latency_s']:.4g} s"),
            ("bandwidth split", f"{bw.sum() / 1e6:.4g} MHz: min {bw.min() / 1e3:.4g} kHz, "
                                f"median {np.median(bw) / 1e3:.4g} kHz, max "
                                f"{bw.max() / 1e3:.4g} kHz"),
            ("solve time", f"{summary['wall_time_s']:.2f} s"),
        ]
        if output is not None:
            rows.append(("plan written", str(output)))
        width = max(len(k) for k, _ in rows)
        typer.echo("\n".join(f"{k:<{width}}  {v}" for k, v in rows))


def plan_summary(result, inst, *, seed: int, round_: int, output: Path | None) -> dict:
    """The JSON summary of a planner result (keys are a public contract)."""
    p = result.solution
    meta = p.metadata
    mse = result.objective_per_subcarrier
    bound = result.bound_per_subcarrier
    return {
        "method": result.method,
        "status": result.status.value,
        "message": result.message,
        "instance": inst.name,
        "rank": p.rank,
        "streams": p.streams,
        "seed": seed,
        "round": round_,
        "gap": result.objective,
        "gap_terms": dict(result.terms),
        "objective": float(mse.sum()),
        "mse": mse.tolist(),
        "lower_bound": bound.tolist(),
        "bound_ratio": (mse / bound).tolist(),
        "airtime_s": meta["airtime_s"],
        "latency_s": meta["latency_s"],
        "latency_budget_s": meta["latency_budget_s"],
        "energy_j_max": meta["energy_j_max"],
        "energy_j_mean": meta["energy_j_mean"],
        "beamforming_method": meta["beamforming_method"],
        "search": meta["search"],
        "beamforming_solves": meta["beamforming_solves"],
        "iterations": result.iterations,
        "wall_time_s": result.wall_time_s,
        "plan": str(output) if output is not None else None,
    }


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
        ("plan", f"{s['method']} on {s['instance']}: rank r = {s['rank']}, L = {s['streams']} "
                 f"streams ({s['search']} search, {s['beamforming_method']} beamformers, "
                 f"{s['beamforming_solves']} beamforming solve(s))"),
        ("predicted gap", f"{s['gap']:.4g} = " + " + ".join(
            f"{v:.3g} {k}" for k, v in s["gap_terms"].items())),
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
        ("energy per device", f"max {s['energy_j_max'] * 1e3:.3g} mJ, mean "
                              f"{s['energy_j_mean'] * 1e3:.3g} mJ per round (transmit)"),
        ("solve time", f"{s['wall_time_s']:.2f} s"),
    ]
    if s["plan"]:
        rows.append(("plan written", s["plan"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
