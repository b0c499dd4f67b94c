"""``fedopt gap``: evaluate the AirFL-LoRA gap of one configuration, or sweep the rank."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from fedopt.cli._common import (
    ChannelOpt,
    ForceOpt,
    InstanceArg,
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


class GapFormat(str, Enum):
    """How ``fedopt gap`` prints (csv: one row per rank of --sweep, or the one configuration)."""

    text = "text"
    json = "json"
    csv = "csv"


class Sweep(str, Enum):
    """What ``--sweep`` varies."""

    rank = "rank"


def gap(
    source: InstanceArg = "default",
    rank: Annotated[int | None, typer.Option("--rank", "-r", min=1, help="LoRA rank r.")] = None,
    streams: Annotated[int | None, typer.Option(
        "--streams", "-L", min=1, help="Streams L (default: the largest the instance allows).")]
    = None,
    sweep: Annotated[Sweep | None, typer.Option(
        "--sweep", help="Evaluate every candidate rank at this L instead of one rank.")] = None,
    plan_file: Annotated[Path | None, typer.Option(
        "--plan", help="Evaluate a saved plan: its rank, streams and beamformers.")] = None,
    other_instance: Annotated[bool, typer.Option(
        "--other-instance", help="Accept a --plan made for another instance of the same "
        "shapes (its recorded digest differs).")] = False,
    beamforming: Annotated[str, typer.Option(
        "--beamforming", help="Beamforming method for L (auto: the planners' choice, multicast "
        "for L = 1 and beamforming above; beamforming, multicast, centroid, sdr, random, mrc, "
        "eigen).")] = "auto",
    seed: SeedOpt = 0,
    round_: RoundOpt = 0,
    channel: ChannelOpt = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="With --sweep rank: save the gap-vs-rank figure (.png).")] = None,
    fmt: Annotated[GapFormat, typer.Option("--format", help="Output format (csv: one row per "
                                           "rank).")] = GapFormat.text,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate the predicted optimality gap (spec 03 §1) of a configuration (r, L)."""
    with user_errors(), progress("gap", not quiet and fmt is GapFormat.text) as tick:
        tick({"label": "loading the instance and the solvers"})  # from second 0
        from fedopt.instance import load_instance
        from fedopt.solvers.registry import names

        inst = load_instance(source)
        if beamforming not in names("beamforming"):
            from fedopt.errors import InvalidArgumentError

            raise InvalidArgumentError(f"--beamforming: got {beamforming!r}, must be one of "
                                       f"{', '.join(names('beamforming'))}")
        ch = load_channel(channel, inst)
        beamformers = None
        if plan_file is not None:
            rank, streams, beamformers, plan_draw = _from_plan(inst, plan_file, rank, streams,
                                                               sweep, other_instance)
            if ch is None and plan_draw is not None:
                seed, round_ = plan_draw
        if streams is None:
            streams = 1 if beamforming == "sdr" else max(inst.aircomp.streams)
        if sweep is None and rank is None:
            err("error: give --rank R (or --sweep rank, or --plan FILE)")
            raise typer.Exit(code=2)
        if plot is not None and sweep is None:
            err("error: --plot needs --sweep rank")
            raise typer.Exit(code=2)
        check_output(plot, force, "--plot")
        common = dict(channel=ch, seed=seed, round=round_, beamforming=beamforming)
        if beamformers is None:  # they depend on L only: solved once, with progress
            try:
                beamformers = _beamformers(inst, streams, common, tick)
            except KeyboardInterrupt:
                interrupted("nothing was saved (fedopt gap keeps no checkpoint)", verb="rerun")
    with user_errors():
        if sweep is None:
            _one(inst, rank, streams, beamformers, common, fmt)
        else:
            _sweep(inst, streams, beamformers, common, fmt, plot)


def _beamformers(inst, streams: int, common: dict, tick) -> Any:
    """L's beamformers on the channel (the ones the planner and ``evaluate`` would find), each
    smoothing stage of the manifold solver a step of the progress bar."""
    from fedopt.channel import draw_channel
    from fedopt.solvers.planner import beamformers_for

    what = f"L = {streams} beamformers ({common['beamforming']})"
    tick({"label": what})

    def stage(record: dict) -> None:
        if "stage" in record and "stages" in record:
            tick({"label": f"{what}: smoothing stage", "done": record["stage"] + 1,
                  "total": record["stages"]})

    ch = common["channel"] or draw_channel(inst, seed=common["seed"], round=common["round"])
    return beamformers_for(inst, streams, channel=ch, seed=common["seed"],
                           beamforming=common["beamforming"], callback=stage)


def _from_plan(inst, path: Path, rank: int | None, streams: int | None, sweep: Any,
               other_instance: bool = False):
    """(rank, streams, beamformers, (seed, round) or None) of ``--plan``."""
    from fedopt.errors import InvalidArgumentError
    from fedopt.plan import DigitalPlan, Plan

    p = Plan.load(path).check(inst, same_instance=not other_instance)
    if isinstance(p, DigitalPlan):
        raise InvalidArgumentError(
            f"--plan: {path} is a digital (TSFA, FDMA) plan; fedopt gap evaluates the AirComp "
            "(AirFL-LoRA) gap, whose latency and distortion do not apply to it. Evaluate it "
            "with `fedopt tsfa-simulate`, or give an AirComp plan")
    if sweep is None:
        rank = rank or p.rank
    streams = streams or p.streams
    if streams != p.streams:
        raise InvalidArgumentError(f"--streams: got {streams}, but the plan has "
                                   f"L = {p.streams}")
    draw = None if p.channel_seed is None else (p.channel_seed, p.channel_round or 0)
    return rank, streams, p.receive_beamformers, draw


def _csv(rows: list[dict]) -> str:
    """Rows of :meth:`evaluate(...).to_dict` as CSV: the scalars, and the gap terms flattened."""
    import csv
    import io

    flat = [{**{k: v for k, v in r.items() if not isinstance(v, (dict, list))},
             **{f"gap_{k}": v for k, v in r.get("gap_terms", {}).items()}} for r in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(flat[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue()


def _one(inst, rank: int, streams: int, beamformers, common: dict, fmt: GapFormat) -> None:
    from fedopt.solvers.planner import evaluate

    out = evaluate(inst, rank, streams, beamformers=beamformers, **common).to_dict()
    if fmt is GapFormat.json:
        print_json(out)
    elif fmt is GapFormat.csv:
        typer.echo(_csv([out]), nl=False)
    else:
        typer.echo(_render_one(out))


def _sweep(inst, streams: int, beamformers, common: dict, fmt: GapFormat,
           plot: Path | None) -> None:
    from fedopt.solvers.planner import evaluate

    rows = [evaluate(inst, r, streams, beamformers=beamformers, **common).to_dict()
            for r in inst.lora.ranks]
    table = [{k: v for k, v in row.items() if k != "mse_sum"} for row in rows]
    feasible = [row for row in table if row["feasible"]]
    best = min(feasible, key=lambda row: row["gap"]) if feasible else None
    out = {"streams": streams, "mse_sum": rows[0]["mse_sum"],
           "best_rank": None if best is None else best["rank"], "rows": table}
    if plot is not None:
        from fedopt.figures import gap_vs_rank

        gap_vs_rank.plot(gap_vs_rank.from_sweep(out, inst.name), plot)
    if fmt is GapFormat.json:
        print_json(out)
    elif fmt is GapFormat.csv:
        typer.echo(_csv([{**r, "mse_sum": out["mse_sum"], "streams": streams} for r in table]),
                   nl=False)
    else:
        typer.echo(_render_sweep(out))
        if plot is not None:
            typer.echo(f"figure written to {plot}")


def _render_one(out: dict) -> str:
    terms = " + ".join(f"{v:.4g} {k}" for k, v in out["gap_terms"].items())
    ok = "meets the budget" if out["feasible"] else "EXCEEDS the latency budget"
    return (f"rank r = {out['rank']}, L = {out['streams']} streams\n"
            f"gap = {out['gap']:.6g} = {terms}\n"
            f"Σ_m MSE_m = {out['mse_sum']:.4e}; round latency {out['latency_s'] * 1e3:.1f} ms "
            f"({ok}), airtime {out['airtime_s'] * 1e3:.2f} ms")


def _render_sweep(out: dict) -> str:
    names = list(out["rows"][0]["gap_terms"])
    head = ["rank", "gap", *names, "latency_ms", "feasible"]
    lines = ["  ".join(f"{h:>22}" if i in range(2, 2 + len(names)) else f"{h:>10}"
                       for i, h in enumerate(head))]
    for row in out["rows"]:
        mark = " *" if row["rank"] == out["best_rank"] else ""
        cells = [f"{row['rank']:>10}", f"{row['gap']:>10.4g}"]
        cells += [f"{row['gap_terms'][n]:>22.4g}" for n in names]
        cells += [f"{row['latency_s'] * 1e3:>10.1f}", f"{'yes' if row['feasible'] else 'no':>10}"]
        lines.append("  ".join(cells) + mark)
    lines.append(f"L = {out['streams']}, Σ_m MSE_m = {out['mse_sum']:.4e}; * best feasible rank "
                 f"r* = {out['best_rank']}")
    return "\n".join(lines)
