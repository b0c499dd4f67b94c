"""``fedopt instance``: create, show and validate network-design instances."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from fedopt.cli._common import OutputFormat, QuietOpt, err, print_json, progress, user_errors

app = typer.Typer(help="Create, show, list and validate network-design instances.",
                  no_args_is_help=True)


def _preset_names() -> list[str]:
    from fedopt.instance import list_presets

    return list_presets()


#: the choices of ``--preset``: the shipped presets
Preset = Enum("Preset", {n.replace("-", "_"): n for n in _preset_names()}, type=str)
Preset.__doc__ = "The shipped instance presets (fedopt/presets/)."


def derived_summary(inst) -> dict:
    """Derived quantities of an instance, for display (spec 01)."""
    import numpy as np

    from fedopt.units import watt_to_dbm

    pl = inst.path_loss_db
    sigma2_dbm = float(watt_to_dbm(inst.noise_power_w))
    p_sub_dbm = watt_to_dbm(inst.power_per_subcarrier_w)
    snr_db = p_sub_dbm - pl - sigma2_dbm
    return {
        "n_devices": inst.n_devices,
        "noise_power_dbm": sigma2_dbm,
        "symbol_time_s": inst.symbol_time_s,
        "params_per_rank": inst.lora.params_per_rank,
        "algorithm": inst.algorithm,
        "payload_per_rank": int(inst.payload(1)),
        "max_rank": inst.lora.max_rank,
        "path_loss_db_min": float(pl.min()),
        "path_loss_db_max": float(pl.max()),
        "snr_per_antenna_db_min": float(snr_db.min()),
        "snr_per_antenna_db_max": float(snr_db.max()),
        "bandwidth_hz": inst.bandwidth_hz,
        "compute_time_s_max": float(np.max(inst.compute_time_s)),
        "ofdm_symbols": {str(r): [inst.ofdm_symbols(r, s) for s in inst.aircomp.streams]
                         for r in inst.lora.ranks},
    }


#: what each path-loss model depends on (the label must not claim a carrier it ignores)
_PATH_LOSS_TEXT = {
    "3gpp-uma": "3gpp-uma (128.1 + 37.6 log10 d/km; independent of the carrier)",
    "38.901-umi": "38.901-umi (32.4 + 21 log10 d + 20 log10 f) at {f} GHz",
    "free-space": "free-space at {f} GHz",
}


def channel_text(ch) -> str:
    """One line on the channel model: the built-in fading and path loss, or Sionna's scenario."""
    carrier = f"{ch.carrier_hz / 1e9:g}"
    if ch.model == "sionna":
        if ch.scenario in ("tdl", "cdl"):
            return (f"Sionna TR 38.901 {ch.scenario.upper()}-{ch.profile}, delay spread "
                    f"{ch.delay_spread_s * 1e9:g} ns, at {carrier} GHz, scaled by path loss "
                    + _PATH_LOSS_TEXT[ch.path_loss].format(f=carrier))
        name = {"umi": "UMi", "uma": "UMa", "rma": "RMa"}[ch.scenario]
        return (f"Sionna TR 38.901 {name} at {carrier} GHz (LoS {ch.los}, O2I "
                f"{ch.o2i}): the scenario's path loss, shadowing and LoS")
    fading = ch.fading + (f" (K = {ch.rician_k_db:g} dB)" if ch.fading == "rician" else "")
    return (f"{fading}, {ch.n_taps} taps, path loss "
            + _PATH_LOSS_TEXT[ch.path_loss].format(f=carrier))


def _path_loss_note(ch) -> str:
    if ch.model == "sionna" and ch.scenario not in ("tdl", "cdl"):
        return (f" (the {ch.path_loss} formula, used by the planner's estimates; the draws "
                "follow the scenario)")
    return ""


def _fmt_list(values) -> str:
    values = list(values)
    if len(set(values)) == 1:
        return f"{values[0]:g} (all)"
    return f"{min(values):g} .. {max(values):g} ({len(values)} values)"


def render_instance(inst) -> str:
    """Readable multi-line table of an instance and its derived quantities."""
    d = derived_summary(inst)
    dev, ofdm, ch, lora = inst.devices, inst.ofdm, inst.channel, inst.lora
    layers = ", ".join(f"{lay.name} {lay.d_out}x{lay.d_in} x{lay.count}" for lay in lora.layers)
    rows = [
        ("instance", f"{inst.name} (schema {inst.schema_version}, digest {inst.digest()})"),
        ("server", f"N_r = {inst.n_rx}, N0 = {inst.server.noise_psd_dbm_hz:g} dBm/Hz, "
                   f"NF = {inst.server.noise_figure_db:g} dB"),
        ("devices", f"K = {dev.count}, N_t = {dev.n_tx}"),
        ("  power (dBm)", _fmt_list(dev.p_max_dbm)),
        ("  distance (m)", _fmt_list(dev.distance_m)),
        ("  dataset size", _fmt_list(dev.dataset_size)),
        ("  compute (FLOP/s)", _fmt_list(dev.compute_flops)),
        ("ofdm", f"M = {ofdm.n_subcarriers}, Δf = {ofdm.subcarrier_spacing_hz:g} Hz, "
                 f"cp = {ofdm.cp_ratio:g}, T_sym = {d['symbol_time_s'] * 1e6:.2f} µs"),
        ("channel", channel_text(ch)),
        ("  path loss (dB)", f"{d['path_loss_db_min']:.1f} .. {d['path_loss_db_max']:.1f}"
                             + _path_loss_note(ch)),
        ("  noise / subcarrier", f"{d['noise_power_dbm']:.1f} dBm"),
        ("  SNR / antenna (dB)", f"{d['snr_per_antenna_db_min']:.1f} .. "
                                 f"{d['snr_per_antenna_db_max']:.1f} (P_k/M over σ², path loss)"),
        ("lora", f"{layers}; factors {lora.factors}, {lora.bits_per_param} bits/param"),
        ("  ranks", f"{list(lora.ranks)} (max {lora.max_rank}); q(r) = {lora.params_per_rank} r"),
        ("  algorithm", f"{inst.algorithm}: sends {d['payload_per_rank']} r reals per round"
                        + (" (m and h)" if inst.payloads_per_round > 1 else "")),
        ("  streams", f"{list(inst.aircomp.streams)}"),
        ("learning", f"batch {inst.learning.batch_size}, E = {inst.learning.local_steps}, "
                     f"T = {inst.learning.rounds}, compute {d['compute_time_s_max'] * 1e3:.1f} "
                     "ms/round (slowest device)"),
    ]
    c = inst.constraints
    cons = [f"{name} = {getattr(c, name):g}" for name in
            ("latency_budget_s", "avg_latency_budget_s", "total_time_s", "bandwidth_hz")
            if getattr(c, name) is not None]
    rows.append(("constraints", ", ".join(cons) or "none"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@app.command("show")
def show(
    source: Annotated[str, typer.Argument(help="Instance file (.yaml/.json) or preset name.")]
    = "default",
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")]
    = OutputFormat.text,
) -> None:
    """Print an instance (a file or a shipped preset) with its derived quantities."""
    with user_errors():
        from fedopt.instance import load_instance

        inst = load_instance(source)
        if fmt is OutputFormat.json:
            print_json({"instance": inst.to_dict(), "derived": derived_summary(inst)})
        else:
            typer.echo(render_instance(inst))


@app.command("new")
def new(
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write (.yaml or .json).")],
    preset: Annotated[Preset, typer.Option("--preset", help="Preset to start from "
                                           "(fedopt instance list).")] = Preset.default,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a new instance file from a shipped preset, ready to edit: a YAML template with a
    comment on every section and field (meaning and unit), or plain JSON for a .json file."""
    with user_errors():
        from fedopt.instance import load_instance, render_template
        from fedopt.io import atomic_write_text

        if output.exists() and not force:
            err(f"error: {output} exists; pass --force to overwrite it")
            raise typer.Exit(code=2)
        inst = load_instance(preset.value)
        if output.suffix.lower() == ".json":
            inst.save(output)
        else:
            atomic_write_text(output, render_template(inst, preset=preset.value))
        typer.echo(f"wrote {output} (preset {preset.value!r})")


@app.command("list")
def list_(
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")]
    = OutputFormat.text,
) -> None:
    """List the shipped presets with their size and a one-line description."""
    with user_errors():
        from fedopt.instance import load_instance

        rows = []
        for name in _preset_names():
            inst = load_instance(name)
            rows.append({"name": name, "devices": inst.n_devices, "n_rx": inst.n_rx,
                         "n_subcarriers": inst.n_subcarriers,
                         "testbed": inst.learning.testbed,
                         "description": " ".join((inst.description or "").split())})
        if fmt is OutputFormat.json:
            print_json({"presets": rows})
            return
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            head = (f"{r['name']:<{width}}  K={r['devices']:<3} N_r={r['n_rx']:<3} "
                    f"M={r['n_subcarriers']:<4} ")
            first = r["description"].split(". ")[0].rstrip(".")
            room = 100 - len(head)
            typer.echo(head + (first if len(first) <= room else first[:room - 3] + "..."))


@app.command("validate")
def validate(
    source: Annotated[str, typer.Argument(help="Instance file (.yaml/.json) or preset name.")],
    channel: Annotated[Path | None, typer.Option(
        "--channel", help="Also check a channel .npz file against the instance.")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")]
    = OutputFormat.text,
) -> None:
    """Check an instance (and optionally a channel file); exit 0 with OK, or 2 with the errors."""
    from fedopt.errors import FedOptError, InvalidInstanceError

    try:
        from fedopt.channel import Channel
        from fedopt.instance import load_instance

        inst = load_instance(source)
        if channel is not None:
            Channel.load(channel, instance=inst)
    except FedOptError as exc:
        if fmt is OutputFormat.json:
            errors = exc.errors if isinstance(exc, InvalidInstanceError) else [str(exc)]
            print_json({"valid": False, "errors": errors})
        else:
            err(f"error: {exc}")
        raise typer.Exit(code=2) from None
    if fmt is OutputFormat.json:
        print_json({"valid": True, "errors": [], "name": inst.name, "digest": inst.digest()})
    else:
        extra = f" and channel {channel}" if channel is not None else ""
        typer.echo(f"OK: {source}{extra} (instance {inst.name!r}, K = {inst.n_devices}, "
                   f"N_t = {inst.n_tx}, N_r = {inst.n_rx}, M = {inst.n_subcarriers})")


def render_layers(model: str, targets: list[str] | None, layers: list[dict]) -> str:
    """The ``lora.layers`` of a model as a commented YAML snippet of an instance file."""
    import yaml

    q = sum(d["count"] * (d["d_out"] + d["d_in"]) for d in layers)
    head = (f"# LoRA layers of {model} (targets: "
            f"{','.join(targets) if targets else 'PEFT default for the model type'}): "
            f"q(r) = {q} r reals per round (factors AB), max rank "
            f"{min(min(d['d_out'], d['d_in']) for d in layers)}\n")
    return head + yaml.safe_dump({"lora": {"layers": layers}}, sort_keys=False,
                                 default_flow_style=None).rstrip()


@app.command("layers")
def layers(
    model: Annotated[Path, typer.Option(
        "--model", help="A local Hugging Face causal LM directory (config.json; nothing is "
        "downloaded). Needs fedopt[hf].")],
    target: Annotated[str | None, typer.Option(
        "--target", help="Comma-separated module names LoRA adapts (default: PEFT's default "
        "for the model type, c_attn for GPT-2, q_proj,v_proj for Llama).")] = None,
    source: Annotated[str, typer.Option(
        "--instance", help="Instance (file or preset) that -o copies with these layers.")]
    = "char-tasks",
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Write a copy of --instance with these lora.layers (.yaml or "
        ".json; candidate ranks above the layers' largest rank are dropped).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")]
    = OutputFormat.text,
    quiet: QuietOpt = False,
) -> None:
    """Print the lora.layers (name, d_out, d_in, count) that PEFT LoRA adapts in a Hugging Face
    model, so an instance's q(r) is the payload `fedopt validate --model` sends; -o writes an
    instance with them."""
    with user_errors():
        from fedopt.fl.hf import model_layers, resolve_targets
        from fedopt.fl.recipe import with_layers
        from fedopt.instance import load_instance

        if output is not None and output.exists() and not force:
            err(f"error: {output} exists; pass --force to overwrite it")
            raise typer.Exit(code=2)
        # importing transformers and building the model (on the meta device) take seconds
        with progress(f"reading {model}", not quiet and fmt is OutputFormat.text) as tick:
            tick({"label": "importing transformers, building the model from config.json"})
            found = model_layers(model, target)
        targets = None if target is None else list(resolve_targets(None, target))
        q = sum(d["count"] * (d["d_out"] + d["d_in"]) for d in found)
        if fmt is OutputFormat.json:
            print_json({"model": str(model), "target_modules": targets, "layers": found,
                        "params_per_rank": q,
                        "max_rank": min(min(d["d_out"], d["d_in"]) for d in found)})
        else:
            typer.echo(render_layers(str(model), targets, found))
        if output is not None:
            inst = with_layers(load_instance(source), found)
            inst.save(output)
            err(f"wrote {output} (instance {inst.name!r} with these lora.layers: q(r) = {q} r, "
                f"ranks {list(inst.lora.ranks)})")
