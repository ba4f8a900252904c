"""``streamscore evaluate`` and ``streamscore shadow report``: the evaluator from the terminal.

Two plain Typer functions, mounted by the main CLI::

    from streams.cli.evaluate import evaluate, shadow_report

    app.command("evaluate")(evaluate)
    shadow = typer.Typer(help="Champion vs challenger.", no_args_is_help=True)
    shadow.command("report")(shadow_report)
    app.add_typer(shadow, name="shadow")

Settings come from the invocation (:func:`streams.cli.common.settings_of`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from schemas.errors import StreamscoreError
from streams.cli.common import print_json, settings_of

console = Console(stderr=True)

_DEFAULT_WINDOWS = (60.0, 300.0, 60.0, 10.0, 3600.0)


def evaluate(
    ctx: typer.Context,
    exit_when_idle: Annotated[
        float | None,
        typer.Option(
            help="Close every window, emit, and exit once no label arrived for this many "
            "seconds (bounded inputs, tests)."
        ),
    ] = None,
    app_id: Annotated[
        str, typer.Option(help="Faust app id: consumer group and changelog topic prefix.")
    ] = "streamscore-evaluator",
    max_batch: Annotated[int, typer.Option(help="Labels per batch, at most.")] = 500,
    emit_interval: Annotated[
        float, typer.Option(help="Seconds between evaluation emissions.")
    ] = 5.0,
    tumbling: Annotated[float, typer.Option(help="Tumbling window size, s.")] = _DEFAULT_WINDOWS[0],
    hopping: Annotated[float, typer.Option(help="Hopping window size, s.")] = _DEFAULT_WINDOWS[1],
    hop: Annotated[float, typer.Option(help="Hopping window step, s.")] = _DEFAULT_WINDOWS[2],
    grace: Annotated[
        float, typer.Option(help="A window closes this long (event time) after its end.")
    ] = _DEFAULT_WINDOWS[3],
    retention: Annotated[
        float, typer.Option(help="Closed windows take late labels for this long, s.")
    ] = _DEFAULT_WINDOWS[4],
    alpha: Annotated[float, typer.Option(help="Level of the sequential test.")] = 0.05,
    min_samples: Annotated[
        int, typer.Option(help="Paired labels before any verdict but inconclusive.")
    ] = 100,
    max_samples: Annotated[
        int | None, typer.Option(help="Label budget: keep the champion after this many.")
    ] = None,
    loss_bound: Annotated[
        float | None, typer.Option(help="Regressors: absolute errors are clipped to this.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="/metrics port (default: metrics.port + 1).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on the last line.")
    ] = False,
) -> None:
    """Join labels with stored predictions; publish per-variant quality and the verdict."""
    from streams.evaluation.app import run_evaluator
    from streams.evaluation.options import EvaluatorOptions
    from streams.evaluation.policy import VerdictPolicy
    from streams.evaluation.windows import WindowSpec

    try:
        options = EvaluatorOptions(
            app_id=app_id,
            max_batch=max_batch,
            emit_interval_s=emit_interval,
            windows=WindowSpec(tumbling, hopping, hop, grace, retention),
            policy=VerdictPolicy(
                alpha=alpha,
                min_samples=min_samples,
                max_samples=max_samples,
                loss_bound=loss_bound,
            ),
            metrics_port=metrics_port,
        )
        summary = run_evaluator(settings_of(ctx), exit_when_idle=exit_when_idle, options=options)
    except (StreamscoreError, ValueError) as exc:
        console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        print_json(summary)
    else:
        Console().print(summary)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.{digits}f}"
    return str(value)


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def render_report(report: dict[str, Any]) -> list[Any]:
    """Rich renderables of a :func:`streams.evaluation.records.latest_report` result."""
    variants = Table(title=f"per-variant quality (cumulative, {report['topic']})")
    for column in ("variant", "version", "labels", "accuracy", "log-loss", "Brier", "MAE", "RMSE",
                   "first label", "last label"):  # fmt: skip
        variants.add_column(column)
    for v in report["variants"]:
        m = v["metrics"]
        variants.add_row(
            v["variant"],
            v["model_version"],
            str(v["count"]),
            _fmt(m.get("accuracy")),
            _fmt(m.get("log_loss")),
            _fmt(m.get("brier")),
            _fmt(m.get("mae")),
            _fmt(m.get("rmse")),
            _when(v["window_start"]),
            _when(v["window_end"]),
        )
    out: list[Any] = [variants]
    verdict = report.get("verdict")
    if verdict is None:
        out.append("verdict: none yet (no label with both predictions)")
    else:
        table = Table(title="champion vs challenger (paired)")
        table.add_column("")
        table.add_column("value")
        colour = {"promote": "green", "keep": "red"}.get(verdict["decision"], "yellow")
        versions = ", ".join(f"{k} v{v}" for k, v in verdict["versions"].items())
        rows = [
            ("verdict", f"[bold {colour}]{verdict['decision']}[/]"),
            ("versions", versions),
            ("paired labels (n)", str(verdict["n"])),
            (
                "discordant: challenger / champion wins",
                f"{verdict['challenger_wins']} / {verdict['champion_wins']}",
            ),
            (
                "effect (challenger - champion)",
                f"{_fmt(verdict['effect'])}  CI [{_fmt(verdict['ci_low'])}, "
                f"{_fmt(verdict['ci_high'])}] ({1 - verdict['alpha']:.0%}, fixed horizon)",
            ),
            (
                "e-value (promote) / always-valid p",
                f"{_fmt(verdict['e_value'])} / {_fmt(verdict['p_value_sequential'])}",
            ),
            (
                "e-value (keep) / always-valid p",
                f"{_fmt(verdict['e_value_keep'])} / {_fmt(verdict['p_value_keep'])}",
            ),
            ("McNemar p (fixed horizon, for reference)", _fmt(verdict["mcnemar_p"])),
            ("alpha", _fmt(verdict["alpha"], 3)),
        ]
        for name, value in rows:
            table.add_row(name, value)
        out.append(table)
    if report["labels"]:
        counts = ", ".join(f"{k} {int(v)}" for k, v in sorted(report["labels"].items()))
        out.append(f"labels: {counts}")
    if report["windows"]:
        out.append(
            "window records: " + ", ".join(f"{k} {n}" for k, n in sorted(report["windows"].items()))
        )
    return out


def shadow_report(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    idle: Annotated[
        float, typer.Option(help="Stop reading after this many seconds without a record.")
    ] = 1.0,
) -> None:
    """Latest per-variant quality and the champion-vs-challenger verdict, with its evidence."""
    from streams.evaluation.records import latest_report

    try:
        report = latest_report(settings_of(ctx), idle_s=idle)
    except StreamscoreError as exc:
        console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        print_json(report)
        return
    if not report["records"]:
        Console().print(f"no evaluation records on {report['topic']} yet")
        return
    terminal = Console()
    for renderable in render_report(report):
        terminal.print(renderable)
