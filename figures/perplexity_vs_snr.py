"""Figure (e): held-out perplexity after federated LoRA fine-tuning vs SNR.

The ``tiny-char`` instance with every device's transmit power swept (the x axis is the median
per-antenna receive SNR per subcarrier, P_k/M · β_k / σ², in dB, with the power in dBm on top).
At each power the AirFL-LoRA plan is re-solved (rank, streams, beamformers follow the SNR) and
run through the loop with the exact AirComp path, next to the random-beamformer and fixed-rank
plans; the error-free ``ideal`` run (AirFL-LoRA's rank at the highest power) is the floor.

Full: 5 powers, 20 rounds, seeds 0 and 1, exact AirComp path; quick: 2 powers, 2 rounds, one
seed, equivalent-noise path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fedopt.figures._common import Progress, figure_canvas, quick_note, save_png, tick, unwrap
from fedopt.figures.training_loss import STYLE

NAME = "perplexity_vs_snr"
TITLE = "Held-out perplexity vs SNR after federated LoRA (tiny-char)"

METHODS = ("airfl-lora", "fixed-rank", "random-plan")


def _median_snr_db(inst: Any) -> float:
    snr = inst.power_per_subcarrier_w * inst.path_loss / inst.noise_power_w
    return float(10 * np.log10(np.median(snr)))


def compute(*, quick: bool = False, seed: int = 0, progress: Progress | None = None
            ) -> dict[str, Any]:
    """Sweep the device power; validate the methods at each point."""
    from fedopt.instance import load_instance
    from fedopt.solvers.validation import ValidateSettings, validate

    base = load_instance("tiny-char")
    powers = [-20.0, 0.0] if quick else [-30.0, -25.0, -20.0, -10.0, 0.0]
    seeds = (seed,) if quick else (seed, seed + 1)
    settings = ValidateSettings(rounds=2 if quick else 20, seeds=seeds,
                                eval_every=2 if quick else 5, eval_batches=1 if quick else 4,
                                mode="equivalent" if quick else "exact")
    n_runs = len(powers) * len(METHODS) + 1
    per_run = settings.rounds * len(seeds)
    points: list[dict[str, Any]] = []
    done = 0
    for p_dbm in powers:
        inst = base.with_devices(p_max_dbm=p_dbm)

        def hook(record: dict, _base: int = done) -> None:
            tick(progress, _base + record["done"], n_runs * per_run)

        rep = validate(inst, baselines=METHODS[1:], settings=settings, callback=hook)
        done += len(METHODS) * per_run
        points.append({
            "p_max_dbm": p_dbm, "median_snr_db": _median_snr_db(inst),
            "methods": {k: {"perplexity": m.get("perplexity"), "rank": m.get("rank"),
                            "streams": m.get("streams"),
                            "relative_aggregation_error": m.get("relative_aggregation_error"),
                            "error": m.get("error")}
                        for k, m in rep.methods.items()},
        })
    top = base.with_devices(p_max_dbm=powers[-1])

    # ideal = AirFL-LoRA's rank at the highest power without any aggregation error
    rep = validate(top, baselines=("ideal",), settings=settings)
    tick(progress, n_runs * per_run, n_runs * per_run)
    ideal = rep.methods["ideal"]
    return {"name": NAME, "instance": base.name, "settings": settings.to_dict(),
            "quick": bool(quick), "methods": list(METHODS), "points": points,
            "ideal": {"perplexity": ideal.get("perplexity"), "rank": ideal.get("rank")}}


def plot(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Left: perplexity vs median SNR per method, the ideal run as a dashed line. Right: the
    measured relative aggregation error ‖ĝ − ḡ‖² / ‖ḡ‖² that caused the differences."""
    d = unwrap(data)
    snr = [p["median_snr_db"] for p in d["points"]]
    with figure_canvas(2, width=5.8, height=4.8) as (fig, (ax, ax_err)):
        for name in d["methods"]:
            style = dict(STYLE.get(name, {"label": name}))
            for a, key in ((ax, "perplexity"), (ax_err, "relative_aggregation_error")):
                pts = [(x, p["methods"].get(name, {}).get(key), p["methods"].get(name, {}))
                       for x, p in zip(snr, d["points"], strict=True)]
                pts = [(x, y, m) for x, y, m in pts if y is not None]
                a.plot([x for x, _, _ in pts], [y for _, y, _ in pts], **style)
                if a is ax:
                    for x, y, m in pts:
                        ax.annotate(f"r={m.get('rank')}, L={m.get('streams')}", (x, y),
                                    textcoords="offset points", xytext=(4, 5), fontsize=7,
                                    color=style.get("color", "k"))
        ideal = d["ideal"]["perplexity"]
        if ideal is not None:
            ax.axhline(ideal, color="k", linestyle="--",
                       label=f"ideal aggregation (r = {d['ideal']['rank']})")
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.set_ylabel("held-out perplexity (per character)")
        ax.set_title("after training")
        ax.legend(loc="best")
        ax_err.set_yscale("log")
        ax_err.set_ylabel("relative error ‖ĝ − ḡ‖² / ‖ḡ‖² (per round)")
        ax_err.set_title("what the air did to the updates")
        for a in (ax, ax_err):
            a.set_xlabel("median per-antenna receive SNR per subcarrier (dB)")
            a.set_xticks(snr, [f"{round(x) + 0:d}\n({p['p_max_dbm']:g} dBm)"
                               for x, p in zip(snr, d["points"], strict=True)])
        s = d["settings"]
        note = quick_note(d, f"{s['rounds']} rounds, one seed, 1 eval batch")
        fig.suptitle(f"{note}{TITLE}\n{s['rounds']} rounds, mean over seeds {s['seeds']}; "
                     "tick labels: SNR (device power)")
        return save_png(fig, path)
