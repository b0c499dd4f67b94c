"""``fedopt gap``: evaluate the AirFL-LoRA gap of one configuration, or sweep the rank."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from fedopt.cli._common import OutputFormat, err, print_json, user_errors


class Sweep(str, Enum):
    """What ``--sweep`` varies."""

    rank = "rank"


def gap(
    source: Annotated[str, typer.Argument(help="Instance file (.yaml/.json) or preset name.")]
    = "default",
    rank: Annotated[int | None, typer.Option("--rank", "-r", min=1, help="LoRA rank r.")] = None,
    streams: Annotated[int | None, typer.Option(
        "--streams", "-L", min=1, help="Streams L (default: the largest the instance allows).")]
    = None,
    sweep: Annotated[Sweep | None, typer.Option(
        "--sweep", help="Evaluate every candidate rank at this L instead of one rank.")] = None,
    plan_file: Annotated[Path | None, typer.Option(
        "--plan", help="Evaluate a saved plan: its rank, streams and beamformers.")] = None,
    beamforming: Annotated[str, typer.Option(
        "--beamforming", help="Beamforming method for L (beamforming, centroid, sdr, random, "
        "mrc, eigen).")] = "beamforming",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Channel seed (and solver seed).")]
    = 0,
    round_: Annotated[int, typer.Option("--round", min=0, help="Block-fading round drawn.")] = 0,
    channel: Annotated[Path | None, typer.Option(
        "--channel", help="Use this channel .npz instead of drawing one.")] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="With --sweep rank: save the gap-vs-rank figure (.png).")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")]
    = OutputFormat.text,
) -> None:
    """Evaluate the predicted optimality gap (spec 03 §1) of a configuration (r, L)."""
    with user_errors():
        from fedopt.channel import Channel
        from fedopt.errors import InvalidArgumentError
        from fedopt.instance import load_instance
        from fedopt.plan import Plan
        from fedopt.solvers.beamforming import BEAMFORMING_METHODS
        from fedopt.solvers.planner import beamformers_for, evaluate

        inst = load_instance(source)
        if beamforming not in BEAMFORMING_METHODS:
            raise InvalidArgumentError(f"--beamforming: got {beamforming!r}, must be one of "
                                       f"{', '.join(BEAMFORMING_METHODS)}")
        ch = Channel.load(channel, instance=inst) if channel is not None else None
        beamformers = None
        if plan_file is not None:
            p = Plan.load(plan_file).check(inst)
            if sweep is None:
                rank = rank or p.rank
            streams = streams or p.streams
            if streams != p.streams:
                raise InvalidArgumentError(f"--streams: got {streams}, but the plan has "
                                           f"L = {p.streams}")
            beamformers = p.receive_beamformers
            if ch is None and p.channel_seed is not None:
                seed, round_ = p.channel_seed, p.channel_round or 0
        if streams is None:
            streams = 1 if beamforming == "sdr" else max(inst.aircomp.streams)
        if sweep is None and rank is None:
            err("error: give --rank R (or --sweep rank, or --plan FILE)")
            raise typer.Exit(code=2)
        if plot is not None and sweep is None:
            err("error: --plot needs --sweep rank")
            raise typer.Exit(code=2)
        common = dict(channel=ch, seed=seed, round=round_, beamforming=beamforming)
        if sweep is None:
            res = evaluate(inst, rank, streams, beamformers=beamformers, **common)
            out = {k: v for k, v in res.items() if k not in ("mse", "lower_bound")}
            out["mse_sum"] = float(res["mse"].sum())
            if fmt is OutputFormat.json:
                print_json(out)
            else:
                typer.echo(_render_one(out))
            return
        if beamformers is None:  # they depend on L only: solve once for the sweep
            from fedopt.channel import draw_channel

            beamformers = beamformers_for(
                inst, streams, channel=ch or draw_channel(inst, seed=seed, round=round_),
                seed=seed, beamforming=beamforming)
        rows = [evaluate(inst, r, streams, beamformers=beamformers, **common)
                for r in inst.lora.ranks]
        table = [{k: v for k, v in row.items() if k not in ("mse", "lower_bound")}
                 for row in rows]
        feasible = [row for row in table if row["feasible"]]
        best = min(feasible, key=lambda row: row["gap"]) if feasible else None
        out = {"streams": streams, "mse_sum": float(rows[0]["mse"].sum()),
               "best_rank": None if best is None else best["rank"], "rows": table}
        if plot is not None:
            _plot_sweep(out, inst, plot)
        if fmt is OutputFormat.json:
            print_json(out)
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


def _plot_sweep(out: dict, inst, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedopt.io import atomic_write_bytes

    ranks = [row["rank"] for row in out["rows"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.plot(ranks, [row["gap"] for row in out["rows"]], "o-", color="black", lw=2,
            label="gap G(r, L)")
    for name in out["rows"][0]["gap_terms"]:
        ax.plot(ranks, [row["gap_terms"][name] for row in out["rows"]], ".--",
                label=name.replace("_", " "))
    if out["best_rank"] is not None:
        best = next(row for row in out["rows"] if row["rank"] == out["best_rank"])
        ax.plot([best["rank"]], [best["gap"]], "r*", ms=14, label=f"r* = {best['rank']}")
    infeasible = [row["rank"] for row in out["rows"] if not row["feasible"]]
    if infeasible:
        ax.axvspan(min(infeasible) * 0.9, max(infeasible) * 1.1, color="grey", alpha=0.15,
                   label="latency budget exceeded")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel("predicted optimality gap (loss units, nats)")
    ax.set_title(f"{inst.name}: gap vs rank at L = {out['streams']} streams")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
