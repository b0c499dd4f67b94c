"""Figure (d): training loss vs rounds for the `fedopt validate` comparison set.

Runs :func:`fedopt.solvers.validation.validate` on the ``tiny-char`` preset with the AirFL-LoRA
plan and the baselines (ideal, fixed-rank, random-plan, single-stream, digital) and plots, per
method, the φ-weighted training loss of every round (left) and the global held-out loss
(right), averaged over seeds. Every method of a seed shares data, mini-batches and channel
draws (common random numbers), so the gaps between curves are the methods' doing.

Full: 30 rounds × seeds 0, 1, 2 (the default `fedopt validate --baselines`); quick: 3 rounds,
seed 0, equivalent-noise AirComp path (a smoke test, not a result).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fedopt.figures._common import Progress, figure_canvas, quick_note, save_png, unwrap

NAME = "training_loss"
TITLE = "Federated LoRA training loss vs rounds (tiny-char)"

#: line style per method (same in figure e)
STYLE = {
    "airfl-lora": {"color": "C0", "marker": "o", "label": "AirFL-LoRA (optimized)"},
    "ideal": {"color": "k", "marker": "", "linestyle": "--", "label": "ideal (error-free)"},
    "fixed-rank": {"color": "C1", "marker": "s", "label": "fixed rank"},
    "random-plan": {"color": "C3", "marker": "x", "label": "random beamformers"},
    "single-stream": {"color": "C2", "marker": "^", "label": "single stream"},
    "digital": {"color": "C4", "marker": "d", "label": "digital (TSFA, FDMA)"},
}


def compute(*, quick: bool = False, seed: int = 0, progress: Progress | None = None
            ) -> dict[str, Any]:
    """Validate the comparison set; keep per-method curves and final numbers."""
    from fedopt.instance import load_instance
    from fedopt.solvers.validation import DEFAULT_BASELINES, ValidateSettings, validate

    seeds = (seed,) if quick else (seed, seed + 1, seed + 2)
    settings = (ValidateSettings(rounds=3, seeds=seeds, eval_every=1, eval_batches=1,
                                 mode="equivalent") if quick
                else ValidateSettings(seeds=seeds))
    report = validate(load_instance("tiny-char"), baselines=DEFAULT_BASELINES,
                      settings=settings, callback=progress)
    methods = {}
    for name, m in report.methods.items():
        methods[name] = {k: m.get(k) for k in (
            "rank", "streams", "final_train_loss", "final_eval_loss", "perplexity",
            "measured_aggregation_error", "predicted_aggregation_error", "latency_s", "error")}
        methods[name]["curves"] = m.get("curves")
    return {"name": NAME, "instance": report.instance, "settings": report.settings,
            "methods": methods, "quick": bool(quick)}


def plot(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Two panels: training loss and held-out loss vs round, one line per method."""
    d = unwrap(data)
    with figure_canvas(2, width=5.6, height=4.4) as (fig, (ax_tr, ax_ev)):
        for name, m in d["methods"].items():
            curves = m.get("curves")
            if not curves:
                continue
            style = dict(STYLE.get(name, {"label": name}))
            label = f"{style.pop('label')} (r = {m['rank']})"
            rounds = list(range(1, len(curves["train_loss"]) + 1))
            every = max(1, len(rounds) // 10)
            ax_tr.plot(rounds, curves["train_loss"], label=label, markevery=every, **style)
            ev = [(t, v) for t, v in zip(rounds, curves["eval_loss"], strict=True)
                  if v is not None]
            if ev:
                ax_ev.plot([t for t, _ in ev], [v for _, v in ev], label=label,
                           markevery=every, **style)
        s = d["settings"]
        for ax, what in ((ax_tr, "training loss (nats/char)"),
                         (ax_ev, "held-out loss (nats/char)")):
            ax.set_xlabel("communication round")
            ax.set_ylabel(what)
        ax_tr.set_title("training (clients' mini-batches)")
        ax_ev.set_title("global held-out set")
        _clip_axis(ax_ev, d)
        ax_ev.legend(loc="upper right")
        note = quick_note(d, f"{s['rounds']} rounds, seed {s['seeds'][0]}, 1 eval batch")
        fig.suptitle(f"{note}{TITLE}: mean over seeds {s['seeds']}, {s['optimizer']} lr "
                     f"{s['lr']:g}")
        return save_png(fig, path)


def _clip_axis(ax: Any, d: dict[str, Any]) -> None:
    """Keep the y range on the methods that converge; a diverging one runs off the top."""
    finals = {k: m["final_eval_loss"] for k, m in d["methods"].items()
              if m.get("final_eval_loss") is not None}
    if len(finals) < 2:
        return
    lo = min(finals.values())
    keep = [k for k, v in finals.items() if v <= lo + 0.5]
    if len(keep) == len(finals):
        return
    top = max(v for k in keep for v in d["methods"][k]["curves"]["eval_loss"] if v is not None)
    bottom = min(v for k in keep for v in d["methods"][k]["curves"]["eval_loss"]
                 if v is not None)
    pad = 0.1 * (top - bottom) + 1e-3
    ax.set_ylim(bottom - pad, top + pad)
    ax.text(0.02, 0.02, "off scale: " + ", ".join(sorted(set(finals) - set(keep))),
            transform=ax.transAxes, fontsize=8, color="0.3")
