"""``fedopt validate``: run a plan (and baselines) through the federated LoRA loop."""

from __future__ import annotations

import json
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from fedopt.cli._common import err, print_json, progress, user_errors


def _choices(name: str, values, doc: str) -> type[Enum]:
    enum = Enum(name, {v.replace("-", "_"): v for v in values}, type=str)
    enum.__doc__ = doc
    return enum


def _planner_names() -> list[str]:
    from fedopt.solvers.registry import names

    return [*names("planner"), *names("beamforming")]


def _algorithm_names() -> tuple[str, ...]:
    from fedopt.instance.sections import ALGORITHMS

    return ALGORITHMS


PlanMethod = _choices("PlanMethod", _planner_names(), "Planners and beamforming methods.")
Optimizer = _choices("Optimizer", ("sgd", "adamw", "sophia"), "Local optimizers.")
Mode = _choices("Mode", ("exact", "equivalent"), "AirComp simulation paths.")
MiraGraph = _choices("MiraGraph", ("task", "complete", "similarity"), "MIRA client graphs.")
Algorithm = _choices("Algorithm", _algorithm_names(), "Federated algorithms.")
class ValidateFormat(str, Enum):
    """How ``fedopt validate`` prints its result (csv: the table, one row per method)."""

    text = "text"
    json = "json"
    csv = "csv"


#: the default --out: one folder per run under it (a digest of what the run computes)
DEFAULT_OUT = Path("validate-out")

#: keys of ``--format json`` per method that scripts rely on (issue contract)
JSON_KEYS = ("final_train_loss", "final_eval_loss", "perplexity", "measured_aggregation_error",
             "predicted_aggregation_error", "latency_s", "retained_gain")
#: top-level keys of ``--format json`` (issue contract)
JSON_TOP_KEYS = ("instance", "settings", "methods", "base_eval_loss")


def _parse_seeds(text: str) -> tuple[int, ...]:
    from fedopt.errors import InvalidArgumentError

    try:
        seeds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InvalidArgumentError(
            f"--seeds: got {text!r}, expected comma-separated integers such as 0,1,2") from None
    if not seeds or min(seeds) < 0:
        raise InvalidArgumentError(f"--seeds: got {text!r}, expected integers >= 0")
    return seeds


def _parse_algorithms(one: str | None, many: str | None) -> list[str] | None:
    """``--algorithm`` / ``--algorithms`` as a list (None: the instance's algorithm)."""
    from fedopt.errors import InvalidArgumentError

    if one is not None and many is not None:
        raise InvalidArgumentError("--algorithm and --algorithms: give one of them")
    if many is not None:
        names = [x.strip() for x in many.split(",") if x.strip()]
        if not names:
            raise InvalidArgumentError(
                f"--algorithms: got {many!r}, expected comma-separated names such as "
                f"fedavg,ffa")
        return names
    return None if one is None else [one]


def _lr_field(optimizer: str, algorithms: list[str] | None) -> str:
    """The recipe field ``--lr`` sets: the learning rate of the optimizer in use (Sophia's for
    ``--optimizer sophia`` or over-the-air Sophia alone)."""
    if optimizer == "sophia" or algorithms == ["ota-sophia"]:
        return "sophia_lr"
    return "adamw_lr" if optimizer == "adamw" else "lr"


def _looks_like_plan(path: Path) -> bool:
    if path.suffix == ".npz":
        return True
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # the instance loader reports the problem
    return isinstance(data, dict) and "rank" in data and "devices" not in data


def _load(source: str, instance: str | None) -> tuple[Any, Any]:
    from fedopt.instance import list_presets, load_instance
    from fedopt.plan import Plan

    path = Path(source)
    if path.exists() and _looks_like_plan(path):
        plan = Plan.load(path)
        name = instance or (plan.instance_name if plan.instance_name in list_presets()
                            else None)
        if name is None:
            from fedopt.errors import PlanError

            raise PlanError(
                f"{source}: the plan was made for instance {plan.instance_name!r}, which is not "
                f"a preset; pass its file with --instance")
        return plan, load_instance(name)
    return None, load_instance(source)


def _fmt(value: Any, spec: str = ".4g", scale: float = 1.0) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return "/".join(str(v) for v in value)
    if isinstance(value, float):
        return format(value * scale, spec)
    return str(value)


def _algorithms_of(report: dict[str, Any]) -> str:
    algs = dict.fromkeys(m.get("algorithm", "fedavg") for m in report["methods"].values())
    return ", ".join(algs)


#: the columns of the table and of --format csv: header, key (or a function of the entry),
#: format, scale
TABLE = (
    ("method", None, None, 1.0), ("r", "rank", None, 1.0), ("L", "streams", None, 1.0),
    ("pred gap", "predicted_gap", ".4g", 1.0),
    ("agg err", "measured_aggregation_error", ".2e", 1.0),
    ("meas/pred", "_ratio", ".3f", 1.0),
    ("eval loss ± sd", "final_eval_loss", ".4f", 1.0),
    ("retained", "retained_gain", ".3f", 1.0),
    ("latency ms", "latency_s", ".1f", 1e3), ("energy mJ", "energy_j_max", ".3g", 1e3),
)


def _value(m: dict[str, Any], key: str | None) -> Any:
    if key == "_ratio":
        pred, meas = m.get("predicted_aggregation_error"), m.get("measured_aggregation_error")
        return meas / pred if pred and meas is not None else None
    return m.get(key)


def _cells(name: str, m: dict[str, Any]) -> list[str]:
    row = [name]
    for _, key, spec, scale in TABLE[1:]:
        text = _fmt(_value(m, key), spec or ".4g", scale) if spec else _fmt(_value(m, key))
        std = m.get(f"{key}_std") if key == "final_eval_loss" else None
        if std:  # a spread over more than one seed
            text += f" ± {std * scale:.1g}"
        row.append(text)
    return row


def table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One plain row per method (the CSV of --format csv): the table's numbers unrounded, the
    spreads over seeds, and the error of a method that did not run."""
    rows = []
    for name, m in report["methods"].items():
        row = {"method": name}
        for _, key, _, _ in TABLE[1:]:
            row["meas_over_pred" if key == "_ratio" else key] = _value(m, key)
        for key in ("final_train_loss", "perplexity", "airtime_s", "final_eval_loss_std",
                    "measured_aggregation_error_std", "predicted_aggregation_error",
                    "algorithm"):
            row[key] = m.get(key)
        row["error"] = m.get("error") or ""
        rows.append(row)
    return rows


def render_table(report: dict[str, Any]) -> str:
    """The predicted-vs-measured table of a validation report (rich, at most 100 columns),
    with the spread over seeds of the held-out loss, then the notes."""
    import io

    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 1), show_edge=False,
                  collapse_padding=True)
    for header, key, _, _ in TABLE:
        table.add_column(header, justify="left" if key is None else "right", no_wrap=True)
    for name, m in report["methods"].items():
        if m.get("error") and m.get("final_eval_loss") is None:
            table.add_row(name, *(["—"] * 2), f"not run: {m['error'][:70]}", *([""] * 6))
            continue
        table.add_row(*_cells(name, m))
    buf = io.StringIO()
    Console(file=buf, width=100, no_color=True, highlight=False).print(table)
    out = [line.rstrip() for line in buf.getvalue().splitlines()]
    s = report["settings"]
    order = report["ordering"]
    out += [
        "",
        f"instance {report['instance']}; {s['rounds']} rounds x seeds {s['seeds']} "
        f"(mean over seeds); algorithm {_algorithms_of(report)}; {s['optimizer']} lr "
        f"{s[_lr_field(s['optimizer'], None)]:g}; aircomp path {s['mode']}; "
        f"{report['wall_s']:.0f} s",
        *([f"model {report['data']['model']['path']} "
           f"({report['data']['model']['model_type']}, PEFT LoRA; loss in nats per token)"]
          if report.get("data", {}).get("model") else []),
        "base model (before fine-tuning): eval loss "
        f"{_fmt(report.get('base_eval_loss'), '.4f')}; retained = fine-tuning gain retained, "
        "(base − method) / (base − ideal)",
        "agg. err = ‖ĝ − ḡ‖² per round (mean); pred. = spec 02 §3 for AirComp, the dropped energy "
        "Σ φ_k ‖dropped_k‖² (an upper bound) for digital; energy = max per device per round",
    ]
    if order["pairs"]:
        out.append(
            f"ordering: by predicted gap {', '.join(order['by_predicted_gap'])}; by measured "
            f"eval loss {', '.join(order['by_measured_eval_loss'])} "
            f"({order['concordant_pairs']}/{order['pairs']} pairs agree)")
    if report.get("out_dir"):
        out.append(f"results written to {report['out_dir']}/ (validate.json, "
                   f"<method>/seed-<s>/rounds.jsonl)")
    import textwrap

    wrapped = [part for line in out for part in (textwrap.wrap(
        line, 100, subsequent_indent="  ", break_on_hyphens=False) or [""])]
    return "\n".join(wrapped)


def render_csv(report: dict[str, Any]) -> str:
    """``--format csv``: :func:`table_rows`, one line per method."""
    import csv
    import io

    rows = table_rows(report)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _note_model(report: dict[str, Any]) -> None:
    """Say on stderr when the instance's lora.layers were replaced by the model's."""
    info = report.get("data", {}).get("model")
    if info and info.get("layers_replaced"):
        shown = ", ".join(f"{x['count']} x ({x['d_out']} x {x['d_in']}) {x['name']}"
                          for x in info["lora_layers"])
        err(f"note: instance {report['instance']!r} planned with the lora.layers of the model "
            f"{info['path']}: {shown} (write such an instance with `fedopt instance layers "
            f"--model {info['path']} -o FILE`)")


def validate(
    source: Annotated[str, typer.Argument(
        help="Plan file (.json/.npz from `fedopt solve -o`) or instance file / preset name "
        "(solved first).")] = "char-tasks",
    instance: Annotated[str | None, typer.Option(
        "--instance", help="Instance of a plan file (default: the plan's preset).")] = None,
    other_instance: Annotated[bool, typer.Option(
        "--other-instance", help="Accept a plan file made for another instance of the same "
        "shapes (its recorded digest differs).")] = False,
    method: Annotated[PlanMethod, typer.Option(
        "--method", "-m", help="Planner used when SOURCE is an instance.")]
    = PlanMethod.airfl_lora,
    baselines: Annotated[bool, typer.Option(
        "--baselines", help="Also run the comparison set: ideal, fixed-rank, random-plan "
        "(random beamformers), single-stream, digital (TSFA over FDMA).")] = False,
    compare: Annotated[str | None, typer.Option(
        "--compare", help="Comma-separated methods to run besides the plan (instead of the "
        "--baselines set).")] = None,
    rounds: Annotated[int | None, typer.Option(
        "--rounds", "-n", min=1, help="Rounds per run (default 30; 8 with --quick).")] = None,
    seeds: Annotated[str | None, typer.Option(
        "--seeds", help="Comma-separated seeds (default 0,1,2; 0 with --quick).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A short smoke run.")] = False,
    lr: Annotated[float | None, typer.Option(
        "--lr", min=0.0, help="Local learning rate (default: the testbed's, 1.0 on "
        "domain-shift, 1.5 on pydoc-topics).")] = None,
    optimizer: Annotated[Optimizer, typer.Option(
        "--optimizer", help="Local optimizer (sophia: SophiaG local steps, Fed-Sophia).")]
    = Optimizer.sgd,
    algorithm: Annotated[Algorithm | None, typer.Option(
        "--algorithm", help="Federated algorithm: fedavg, ota-sophia (over-the-air Sophia), "
        "ffa (FFA-LoRA), fedsa (FedSA-LoRA), local (no communication), mira (multi-task "
        "LoRA), pwff (personalized, with reward models); default: the instance's "
        "learning.algorithm (fedavg).")] = None,
    mira_graph: Annotated[MiraGraph, typer.Option(
        "--mira-graph", help="MIRA's client graph: task (clients of one task, the default), "
        "complete, or similarity (of the updates; needs an uplink that delivers each one: "
        "ideal or digital).")] = MiraGraph.task,
    algorithms: Annotated[str | None, typer.Option(
        "--algorithms", help="Comma-separated algorithms to compare in one run (methods "
        "reported as NAME@ALGORITHM).")] = None,
    mode: Annotated[Mode, typer.Option(
        "--mode", help="AirComp path: exact (symbol level) or equivalent (validated "
        "equivalent noise, faster).")] = Mode.exact,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (default: "
                                             "validate-out/<instance>-<run key>, one per "
                                             "run).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue interrupted runs in --out from their checkpoints (finished "
        "runs are reported, not rerun).")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace the finished validation an --out holds.")] = False,
    fmt: Annotated[ValidateFormat, typer.Option("--format", help="Output format (csv: the "
                                                "table, one row per method).")]
    = ValidateFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    device: Annotated[str, typer.Option(
        "--device", help="Where the loop trains: cpu (bit-exact) or cuda[:N] where torch sees "
        "a GPU.")] = "cpu",
    model: Annotated[Path | None, typer.Option(
        "--model", help="A local Hugging Face causal LM directory (config.json, "
        "model.safetensors, tokenizer; nothing is downloaded) to fine-tune with PEFT LoRA "
        "instead of the testbed's character model; the testbed's text is re-tokenized with "
        "its tokenizer, and an instance gets the model's lora.layers (see `fedopt instance "
        "layers`). Needs fedopt[hf].")] = None,
    target: Annotated[str | None, typer.Option(
        "--target", help="With --model: comma-separated module names LoRA adapts (default: "
        "PEFT's default for the model type, c_attn for GPT-2, q_proj,v_proj for Llama).")]
    = None,
) -> None:
    """Run a plan through the federated LoRA loop and compare predicted with measured
    aggregation error, loss, perplexity, latency and energy (optionally against baselines)."""
    show = not quiet and fmt is ValidateFormat.text
    with user_errors(), progress("validate", show) as tick:
        tick({"label": "loading the loop (torch) and the plan"})  # from second 0
        from fedopt.solvers.validation import DEFAULT_BASELINES, ValidateSettings
        from fedopt.solvers.validation import validate as run

        method, optimizer, mode = method.value, optimizer.value, mode.value
        algorithm = None if algorithm is None else algorithm.value
        plan, inst = _load(source, instance)
        if plan is not None:
            plan.check(inst, same_instance=not other_instance)
        testbed = inst.learning.testbed
        base = (ValidateSettings.quick(testbed) if quick
                else ValidateSettings.for_testbed(testbed))
        algs = _parse_algorithms(algorithm, algorithms)
        settings = replace(
            base, rounds=rounds or base.rounds,
            seeds=_parse_seeds(seeds) if seeds is not None else base.seeds,
            optimizer=optimizer, mode=mode, device=device, mira_graph=mira_graph.value,
            model=None if model is None else str(model), target_modules=target,
            **({} if lr is None else {_lr_field(optimizer, algs): lr}))
        extra: tuple[str, ...] = ()
        if compare is not None:
            extra = tuple(x.strip() for x in compare.split(",") if x.strip())
        elif baselines:
            extra = DEFAULT_BASELINES
        out = out if out is not None else DEFAULT_OUT / _run_key(inst, plan, method, extra, algs,
                                                                 settings)
        _check_out(out, resume, force)
        try:
            report = run(inst, plan=plan, method=method, baselines=extra, algorithms=algs,
                         settings=settings, out_dir=out, resume=resume,
                         callback=tick).to_dict(per_seed=False)
        except KeyboardInterrupt:
            _interrupted(out)
    with user_errors():
        if fmt is ValidateFormat.json:
            print_json(report)
        elif fmt is ValidateFormat.csv:
            typer.echo(render_csv(report), nl=False)
        else:
            typer.echo(render_table(report))
        _note_model(report)
        failed = [k for k, v in report["methods"].items() if v.get("final_eval_loss") is None]
        if failed:
            err(f"warning: not run: {', '.join(failed)} (see the table / validate.json)")


def _run_key(inst: Any, plan: Any, method: str, extra: tuple, algs: Any, settings: Any) -> str:
    """``<instance>-<12 hex>``: a digest of everything the run computes (so the default --out
    of two different runs never collide, and the same run finds its own checkpoints)."""
    import hashlib

    payload = {"instance": inst.digest(), "plan": None if plan is None else plan.to_dict(),
               "method": method, "baselines": list(extra), "algorithms": algs,
               "settings": settings.to_dict()}
    text = json.dumps(payload, sort_keys=True, default=str)
    return f"{inst.name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _check_out(out: Path, resume: bool, force: bool) -> None:
    """A finished validation in ``out`` is not replaced silently."""
    from fedopt.errors import InvalidArgumentError

    if resume and force:
        raise InvalidArgumentError("--resume and --force: --resume reuses what --out holds, "
                                   "--force replaces it; give one of them")
    if (out / "validate.json").is_file() and not (resume or force):
        raise InvalidArgumentError(
            f"--out: {str(out)!r} holds a finished validation (validate.json); pass --resume "
            "to report it without rerunning finished runs, --force to replace it, or another "
            "--out")


def _interrupted(out: Path) -> None:
    """Ctrl-C: say what was saved and the exact command that resumes, exit 130."""
    import shlex
    import sys

    args = sys.argv[1:]
    if "--resume" not in args:
        args = [*args, "--resume"]
    if not any(a in ("--out", "-o") or a.startswith("--out=") for a in args):
        args = [*args, "--out", str(out)]
    err(f"interrupted: every finished round is checkpointed in {out}/; resume with: "
        f"fedopt {shlex.join(args)}")
    raise typer.Exit(code=130)
