"""``fedopt solve``: solve an instance and print (or save) a plan."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from fedopt.cli._common import (
    ChannelOpt,
    ForceOpt,
    FormatOpt,
    InstanceArg,
    OutputFormat,
    QuietOpt,
    RoundOpt,
    SeedOpt,
    check_output,
    err,
    interrupted,
    load_channel,
    print_json,
    progress,
    user_errors,
)
from fedopt.solvers.registry import METHODS
from fedopt.solvers.summary import plan_summary, tsfa_summary

#: the choices of ``--method``: every method of the solver registry
Method = Enum("Method", {name.replace("-", "_"): name for name in METHODS}, type=str)
Method.__doc__ = ("Methods of ``fedopt solve`` (fedopt.solvers.registry): planners, "
                  "beamforming-only methods and the digital tsfa.")


def solve(
    source: InstanceArg = "default",
    method: Annotated[Method, typer.Option("--method", "-m", help="Planner, beamforming-only "
                                           "or digital (tsfa) method.")]
    = Method.airfl_lora,
    streams: Annotated[int | None, typer.Option(
        "--streams", "-L", min=1, help="Spatial streams L (planners: restrict the search to this "
        "L; beamforming methods: default the largest the instance allows, 1 for sdr).")] = None,
    seed: SeedOpt = 0,
    round_: RoundOpt = 0,
    channel: ChannelOpt = None,
    rank: Annotated[int | None, typer.Option(
        "--rank", min=1, help="Fix the LoRA rank (fixed-rank default: the largest candidate "
        "that meets the latency budget).")] = None,
    randomizations: Annotated[int, typer.Option(
        "--randomizations", min=0, help="Gaussian randomizations of the SDR method.")] = 200,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Write the plan (.json or .npz).")] = None,
    force: ForceOpt = False,
    fmt: FormatOpt = OutputFormat.text,
    quiet: QuietOpt = False,
    sparsity: Annotated[float, typer.Option(
        "--sparsity", help="tsfa: nominal sparsity ρ_nom in [0, 1) of the offline stage.")] = 0.0,
    samples: Annotated[int, typer.Option(
        "--samples", min=1, help="tsfa: channel rounds of the expected-latency estimate.")]
    = 100,
) -> None:
    """Plan rank, streams and receive beamformers (AirComp) or rank, sparsity and bandwidth
    (--method tsfa, digital uplink) for an instance and print the plan."""
    name = method.value
    digital = METHODS[name].family == "digital"
    if digital and streams is not None:
        err("error: --streams: the tsfa method plans a digital (FDMA) uplink, which has no "
            "spatial streams; drop --streams")
        raise typer.Exit(code=2)
    with user_errors():
        from fedopt.instance import load_instance
        from fedopt.solvers.registry import solve as run

        if output is not None:  # before the solve: a bad path must not cost a run
            from fedopt.plan import check_plan_suffix

            check_plan_suffix(output, "-o/--output")
            check_output(output, force)
        inst = load_instance(source)
        given = load_channel(channel, inst)
        common = {"seed": seed, "round": round_, "channel": given, "rank": rank}
        if digital:
            options = {**common, "nominal_sparsity": sparsity, "samples": samples}
        else:
            options = {**common, **_aircomp_options(inst, name, streams, randomizations)}
        with progress(f"solving {inst.name} ({name})",
                      enabled=not quiet and fmt is OutputFormat.text) as cb:
            try:
                result = run(inst, name, callback=cb, **options)
            except KeyboardInterrupt:
                interrupted("nothing was saved (a plan is written only when the solve ends)",
                            verb="rerun")
        if output is not None:
            result.solution.save(output)
        summary = (tsfa_summary if digital else plan_summary)(
            result, inst, seed=seed, round_=round_, output=output, channel=given,
            channel_file=channel)
        if fmt is OutputFormat.json:
            print_json(summary)
        else:
            typer.echo((render_tsfa if digital else render_summary)(summary, inst))


def _aircomp_options(inst, method: str, streams: int | None, randomizations: int) -> dict:
    """The planner options of the AirComp methods: the stream restriction and SDR's
    randomizations."""
    from fedopt.errors import InvalidArgumentError

    if method == "sdr":
        if streams not in (None, 1):
            raise InvalidArgumentError(
                f"--streams: got L = {streams}, the sdr method solves L = 1 only; use "
                "--streams 1 or another method")
        streams = 1
    if streams is not None:
        inst.validate_streams(streams)
    opts = {"streams": None if streams is None else [streams]}
    if method == "sdr":
        opts["randomizations"] = randomizations
    return opts


def _channel_text(s: dict) -> str:
    """Where the channel came from: a draw (seed, round) or a file (its recorded provenance)."""
    if s.get("channel_file") is None:
        return f"seed {s['seed']}, round {s['round']}"
    if s["channel_seed"] is None:
        drawn = "no recorded seed"
    else:
        drawn = f"drawn with seed {s['channel_seed']}, round {s['channel_round']}"
    return f"file {s['channel_file']} ({drawn}); solver seed {s['seed']}"


def _rows(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def render_tsfa(s: dict, inst) -> str:
    """Readable TSFA plan summary."""
    import numpy as np

    bw = np.asarray(s["bandwidth_hz"])
    lat = s["expected_latency_per_rank_s"]
    rows = [
        ("plan", f"tsfa on {inst.name}: rank r = {s['rank']}, nominal sparsity "
                 f"{s['sparsity'][0]:.3g} ({s['kept_components']} of {s['rank']} "
                 "components kept)"),
        ("bound", f"{s['objective']:.4g} = " + " + ".join(
            f"{v:.3g} {k}" for k, v in s["bound_terms"].items())),
        ("status", f"{s['status']} — {s['message']}"),
        ("expected latency", f"{s['expected_latency_s']:.4g} s per round (average "
                             f"budget {s['latency_budget_s']:.4g} s)"),
        ("  per rank", ", ".join(f"r={r}: {v:.3g} s" for r, v in lat.items())),
        ("this round", f"{_channel_text(s)}: min-max latency "
                       f"{s['latency_s']:.4g} s"),
        ("bandwidth split", f"{bw.sum() / 1e6:.4g} MHz: min {bw.min() / 1e3:.4g} kHz, "
                            f"median {np.median(bw) / 1e3:.4g} kHz, max "
                            f"{bw.max() / 1e3:.4g} kHz"),
        ("solve time", f"{s['wall_time_s']:.2f} s"),
    ]
    if s["plan"]:
        rows.append(("plan written", s["plan"]))
    return _rows(rows)


#: how the text output names each ``lower_bound_kind``
BOUND_LABELS = {
    "single-device": "single-device bound, loose",
    "sdr": "SDR bound",
    "sdr-dual": "SDR-dual bound",
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
        ("channel", _channel_text(s)),
        ("Σ_m MSE_m", f"{s['objective']:.4e} (unit-power symbols; "
                      f"{10 * np.log10(s['objective']):.2f} dB)"),
        ("MSE per subcarrier", f"min {mse.min():.3e}, median {np.median(mse):.3e}, "
                               f"max {mse.max():.3e}"),
        ("MSE / lower bound", f"median {np.median(ratio):.3f}, max {ratio.max():.3f} "
                              f"(vs the {BOUND_LABELS[s['lower_bound_kind']]}; "
                              "1 = certified optimal)"),
        ("noise per subcarrier", f"{float(watt_to_dbm(inst.noise_power_w)):.1f} dBm"),
        ("airtime per round", f"{s['airtime_s'] * 1e3:.2f} ms "
                              f"({inst.ofdm_symbols(s['rank'], s['streams'])} OFDM symbols for "
                              f"{s['payload_reals']} reals, algorithm {s['algorithm']})"),
        ("round latency", lat),
        ("energy per device", f"max {s['energy_j_max'] * 1e3:.3g} mJ, mean "
                              f"{s['energy_j_mean'] * 1e3:.3g} mJ per round (transmit)"),
        ("solve time", f"{s['wall_time_s']:.2f} s"),
    ]
    if s["plan"]:
        rows.append(("plan written", s["plan"]))
    return _rows(rows)
