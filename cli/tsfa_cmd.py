"""``fedopt tsfa-simulate``: run TSFA's online controller over many channel rounds."""

from __future__ import annotations

from typing import Annotated

import typer

from fedopt.cli._common import OutputFormat, interrupted, print_json, progress, user_errors


def tsfa_simulate(
    source: Annotated[str, typer.Argument(help="Instance file (.yaml/.json) or preset name.")]
    = "default",
    rounds: Annotated[int, typer.Option("--rounds", "-n", min=1, help="Channel rounds.")] = 200,
    v: Annotated[float, typer.Option("--V", "--v", min=0.0, help="Lyapunov weight V of the "
                                     "sparsification error against latency.")] = 0.01,
    rank: Annotated[int | None, typer.Option(
        "--rank", min=1, help="LoRA rank (default: TSFA's offline stage chooses it).")] = None,
    budget: Annotated[float | None, typer.Option(
        "--budget", min=0.0, help="Average latency budget T̄ in seconds (default: the "
        "instance's avg_latency_budget_s).")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Channel seed.")] = 0,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")]
    = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Simulate TSFA's online stage: per round, the sparsity and bandwidth split that trade the
    sparsification error against latency under a long-term average latency budget."""
    show = not quiet and fmt is OutputFormat.text
    with user_errors():
        with progress("tsfa-simulate", show) as tick:
            tick({"label": "loading the instance and the TSFA solver"})  # from second 0
            from fedopt.instance import load_instance
            from fedopt.solvers.tsfa import select_rank, simulate

            try:
                inst = load_instance(source)
                if rank is None:
                    tick({"label": "offline stage: choosing the rank"})
                    rank = select_rank(inst, avg_latency_budget_s=budget, seed=seed).solution.rank
                else:
                    rank = inst.validate_rank(rank)
                label = f"online stage, r = {rank}, V = {v:g}: round"
                tick({"done": 0, "total": rounds, "label": label})
                report = simulate(inst, rank, rounds=rounds, V=v, seed=seed,
                                  avg_latency_budget_s=budget,
                                  callback=lambda rec: tick({"done": rec["round"] + 1,
                                                             "total": rounds, "label": label}))
            except KeyboardInterrupt:
                interrupted("nothing was saved (fedopt tsfa-simulate keeps no checkpoint)",
                            verb="rerun")
        res = report.to_dict()
        keys = ("rounds", "avg_latency_s", "latency_budget_s", "mean_queue", "final_queue",
                "mean_sparsity", "mean_sparsification_error", "queue_bound_s",
                "decide_time_s_median", "certified_rounds", "max_relative_gap")
        out = {"instance": inst.name, "rank": rank, "V": v, "seed": seed,
               **{k: res[k] for k in keys if k in res}}
        if fmt is OutputFormat.json:
            print_json(out)
            return
        ratio = out["avg_latency_s"] / out["latency_budget_s"]
        rows = [
            ("TSFA online stage", f"{inst.name}, rank r = {rank}, V = {v:g}, "
                                  f"{out['rounds']} rounds (seed {seed})"),
            ("avg latency", f"{out['avg_latency_s']:.4g} s vs budget "
                            f"{out['latency_budget_s']:.4g} s ({100 * (ratio - 1):+.2f} %)"),
            ("queue", f"mean {out['mean_queue']:.4g} s, final {out['final_queue']:.4g} s "
                      f"(telescoping bound T̄ + Q(T)/T = {out['queue_bound_s']:.4g} s)"),
            ("sparsity", f"mean {out['mean_sparsity']:.4g}"),
            ("sparsification error", f"mean {out['mean_sparsification_error']:.4g} "
                                     "(Σ_k p_k E_drop,k per round)"),
            ("decision time", f"median {out['decide_time_s_median'] * 1e3:.3g} ms per round"),
        ]
        width = max(len(k) for k, _ in rows)
        typer.echo("\n".join(f"{k:<{width}}  {val}" for k, val in rows))
