"""``fedopt calibrate``: fit the gap model's constants to pilot runs of the FL loop."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from fedopt.cli._common import OutputFormat, err, print_json, progress, user_errors

#: the default --out: one folder per calibration under it (a digest of what it computes)
DEFAULT_OUT = Path("calibrate-out")

#: the names errors give the arguments of fedopt.solvers.validation.calibrate
_OPTIONS = {"rounds": "--rounds", "ranks": "--ranks", "seeds": "--seeds",
            "noise_levels": "--noise-levels", "noise_rank": "--noise-rank"}


def _parse_list(option: str, text: str, kind: type, example: str) -> tuple[Any, ...]:
    from fedopt.errors import InvalidArgumentError

    try:
        values = tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InvalidArgumentError(
            f"{option}: got {text!r}, expected comma-separated "
            f"{'integers' if kind is int else 'numbers'} such as {example}") from None
    if not values:
        raise InvalidArgumentError(f"{option}: got {text!r}, expected at least one value such "
                                   f"as {example}")
    return values


def _command(source: str, plan: Any) -> str:
    return (f"fedopt calibrate {shlex.quote(source)} --rounds {plan.rounds} --seeds "
            f"{','.join(map(str, plan.seeds))} --ranks {','.join(map(str, plan.ranks))} "
            f"--noise-levels {','.join(f'{x:g}' for x in plan.noise_levels)} --noise-rank "
            f"{plan.noise_rank}")


def _pilot_line(p: dict[str, Any]) -> str:
    what = "ideal" if p["kind"] == "ideal" else f"noise {p['noise']:g}"
    head = f"pilot {what:<10s} r = {p['rank']:<3d} seed {p['seed']:<4d}"
    if p.get("diverged"):
        return f"{head} diverged ({p['wall_s']:.0f} s)"
    rise = f", rise {p['loss_rise']:+.3g}" if "loss_rise" in p else ""
    err = f", D = {p['aggregation_error']:.3g}" if p["kind"] == "noisy" else ""
    saved = " (read back)" if p.get("reused") else ""
    return (f"{head} v = {p['update_scale']:.4g}{err}, eval loss {p['final_eval_loss']:.4f}"
            f"{rise}, {p['wall_s']:.0f} s{saved}")


def calibrate(
    source: Annotated[str, typer.Argument(help="Instance file or preset name (its LoRA layers "
                                          "must be the loop model's, as in char-tasks or "
                                          "tiny-char).")]
    = "char-tasks",
    rounds: Annotated[int | None, typer.Option(
        "--rounds", "-n", min=1, help="Rounds of each pilot run (default: the instance's "
        "learning.rounds).")] = None,
    seeds: Annotated[str | None, typer.Option(
        "--seeds", help="Comma-separated seeds; every rank and noise level runs once per seed "
        "(default 100,101).")] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", min=0, help="One seed (the same as --seeds N).")] = None,
    ranks: Annotated[str | None, typer.Option(
        "--ranks", help="Comma-separated ranks of the error-free pilots (default: the "
        "instance's candidate ranks).")] = None,
    noise_levels: Annotated[str | None, typer.Option(
        "--noise-levels", help="Comma-separated injected error variances per entry, in units "
        "of the round's update scale v_t² (default 4,8,16).")] = None,
    noise_rank: Annotated[int | None, typer.Option(
        "--noise-rank", help="Rank of the noisy pilots (default: the largest rank).")] = None,
    truncation: Annotated[str, typer.Option(
        "--truncation", help="How ε(r) is written: loss-profile (the measured loss against the "
        "rank) or spectrum (the learned update's singular values).")] = "loss-profile",
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Write the calibrated instance (.yaml with a commented header "
        "of the fits, or .json).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --output.")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder where each pilot is saved when it finishes, and found again by "
        "a rerun of the same calibration (an interrupted one resumes there; default: "
        "calibrate-out/<instance>-<run key>, one per calibration).")] = None,
    rerun: Annotated[bool, typer.Option(
        "--rerun", help="Rerun every pilot, replacing the ones --out holds.")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")]
    = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Pilot runs of the FL loop — error-free at every rank, and with injected aggregation
    error at several levels, each for several seeds — and least-squares fits of the update scale
    v(r) = v r^(-β), the spectrum of the learned update, the smoothness L_s, the noise gain
    L_s λ/(2μ), σ_g² and Δ0 (spec 03 §4), each reported with its standard error, R² and
    residuals; optionally write the calibrated instance."""
    show = not quiet and fmt is OutputFormat.text
    with user_errors():
        with progress("calibrate", show) as tick:
            tick({"label": "loading the loop (torch)"})  # from second 0
            cal, plan, out = _run(source, tick, rounds=rounds, seeds=seeds, seed=seed,
                                  ranks=ranks, noise_levels=noise_levels,
                                  noise_rank=noise_rank, truncation=truncation, output=output,
                                  force=force, out=out, rerun=rerun)
        if output is not None:
            cal.save(output, command=_command(source, plan) + f" --truncation {truncation}")
        pilots = cal.measurements["pilots"]
        reused = sum(1 for p in pilots if p.get("reused"))
        if fmt is OutputFormat.json:
            print_json({**cal.to_dict(), "instance": cal.instance.name,
                        "output": None if output is None else str(output),
                        "pilots_dir": str(out / "pilots"), "pilots_reused": reused})
            return
        lines = cal.summary_lines()
        lines += [_pilot_line(p) for p in pilots]
        lines.append(f"pilots: {len(pilots) - reused} run, {reused} read back, saved in "
                     f"{out / 'pilots'}" + (" (--rerun reruns them)" if reused else ""))
        if output is not None:
            lines.append(f"calibrated instance written to {output}")
        typer.echo("\n".join(lines))


def _run(source: str, tick: Any, *, rounds: Any, seeds: Any, seed: Any, ranks: Any,
         noise_levels: Any, noise_rank: Any, truncation: str, output: Path | None,
         force: bool, out: Path | None, rerun: bool) -> tuple[Any, Any, Path]:
    """Check the arguments, then run the calibration (pilots saved in ``out``)."""
    from fedopt.errors import InvalidArgumentError
    from fedopt.instance import load_instance
    from fedopt.solvers.validation import calibrate as run
    from fedopt.solvers.validation.calibrate import (
        DEFAULT_NOISE_LEVELS,
        DEFAULT_SEEDS,
        check_arguments,
    )
    from fedopt.solvers.validation.calibration_store import run_key
    from fedopt.solvers.validation.driver import ValidateSettings

    if output is not None and output.exists() and not force:
        raise InvalidArgumentError(f"--output: {output} exists; pass --force to overwrite")
    if seed is not None and seeds is not None:
        raise InvalidArgumentError(
            f"--seed: got {seed} together with --seeds {seeds}; pass one of them")
    inst = load_instance(source)
    plan = check_arguments(
        inst, rounds=rounds,
        ranks=None if ranks is None else _parse_list("--ranks", ranks, int, "1,4,32"),
        seeds=((seed,) if seed is not None else DEFAULT_SEEDS if seeds is None
               else _parse_list("--seeds", seeds, int, "100,101")),
        noise_levels=(DEFAULT_NOISE_LEVELS if noise_levels is None
                      else _parse_list("--noise-levels", noise_levels, float, "4,8,16")),
        noise_rank=noise_rank, names=_OPTIONS)
    if out is None:
        recipe = ValidateSettings.for_testbed(inst.learning.testbed)
        out = DEFAULT_OUT / run_key(inst, recipe, plan, truncation)
    done = {"done": 0, "total": 0}  # the last progress record: pilots finished (and saved)

    def count(record: dict) -> None:
        done.update({k: record[k] for k in ("done", "total") if k in record})
        tick(record)

    try:
        cal = run(inst, rounds=plan.rounds, ranks=plan.ranks, seeds=plan.seeds,
                  noise_levels=plan.noise_levels, noise_rank=plan.noise_rank, callback=count,
                  truncation=truncation, out_dir=out, rerun=rerun)
    except KeyboardInterrupt:
        _interrupted(out, done["done"], done["total"])
    return cal, plan, out


def _interrupted(out: Path, saved: int, total: int) -> None:
    """Ctrl-C: say what was saved and the exact command that resumes, exit 130."""
    import sys

    args = sys.argv[1:]
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args = [*args, "--out", str(out)]
    args = [a for a in args if a != "--rerun"]
    of = f" of {total}" if total else ""
    err(f"interrupted: {saved}{of} pilots are saved in {out / 'pilots'}; resume with: "
        f"fedopt {shlex.join(args)}")
    raise typer.Exit(code=130)
