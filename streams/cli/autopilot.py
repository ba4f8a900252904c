"""``streamscore retrain`` and ``streamscore autopilot run|simulate``: the autopilot from the
terminal.

Mounted by the main CLI::

    from streams.cli.autopilot import autopilot_app, retrain

    app.command("retrain")(retrain)
    app.add_typer(autopilot_app, name="autopilot")
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from schemas.errors import ConfigError
from streams.cli.common import JsonFlag, new_app, print_json, settings_of
from streams.cli.models import default_actor

autopilot_app = new_app(
    help="The model autopilot: drift → retrain → shadow → verdict → promote or roll back."
)
console = Console(stderr=True)


def _hyperparameters(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` flags; values are JSON (numbers, true/false, null) or text."""
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--hyperparameter {pair!r}: write KEY=VALUE, e.g. max_depth=4")
        try:
            found[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            found[key.strip()] = value
    return found


def retrain(
    ctx: typer.Context,
    window_minutes: Annotated[
        float | None,
        typer.Option(
            help="Train on the last this many minutes (default: autopilot.retrain.window_s)."
        ),
    ] = None,
    hyperparameter: Annotated[
        list[str] | None,
        typer.Option(
            "--hyperparameter",
            "-p",
            help="Override one of the champion's hyperparameters: KEY=VALUE (repeatable).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="Registered model (default: registry.model_name)."),
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Who acts, for the audit trail.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Retrain the champion's model family on recent labelled events (a Prefect flow), and
    register the candidate as the challenger if it is not worse; exit 1 if the run failed."""
    from streams.autopilot.audit import audit_sink
    from streams.autopilot.retrain import RetrainJob, result_records, run_retrain, started_record

    overrides = {"registry": {"model_name": name}} if name else {}
    settings = settings_of(ctx, **overrides)
    now_ms = int(time.time() * 1000)
    window_s = window_minutes * 60 if window_minutes else settings.autopilot.retrain.window_s
    if window_s <= 0:
        raise ConfigError("--window-minutes must be > 0")
    job = RetrainJob(
        settings,
        settings.registry.model_name,
        actor or default_actor(),
        "streamscore retrain",
        now_ms - int(window_s * 1000),
        now_ms,
        _hyperparameters(hyperparameter or []),
    )
    sink = audit_sink(settings)
    with console.status("retraining (Prefect flow streamscore-retrain) ..."):
        result = run_retrain(job)
    parent = result.champion_version or ""
    sink.publish([started_record(job, parent), *result_records(job, result)])
    if as_json:
        print_json({"outcome": result.outcome, **result.details()})
    else:
        table = Table(title=f"retrain {settings.registry.model_name}: {result.outcome}",
                      show_header=False)  # fmt: skip
        for key, value in result.details().items():
            table.add_row(key, value)
        Console().print(table)
    if result.outcome == "failed":
        raise typer.Exit(1)


@autopilot_app.command("run")
def run(
    ctx: typer.Context,
    mode: Annotated[
        str | None, typer.Option(help="off, recommend or auto (default: autopilot.mode).")
    ] = None,
    run_for: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until SIGTERM).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the controller: watch the verdict and the guards, retrain on drift, promote or
    roll back (in auto mode), audit every step; metrics on metrics.port + 2."""
    from streams.autopilot.app import run_autopilot

    overrides = {"autopilot": {"mode": mode}} if mode else {}
    status = run_autopilot(settings_of(ctx, **overrides), run_for_s=run_for)
    if as_json:
        print_json(status)
    else:
        Console().print(status)


@autopilot_app.command("simulate")
def simulate(
    runs: Annotated[int, typer.Option(help="Seeded runs.")] = 1000,
    labels: Annotated[int, typer.Option(help="Paired labels per run.")] = 5000,
    batch: Annotated[int, typer.Option(help="Labels between two looks of the controller.")] = 100,
    champion_accuracy: Annotated[float, typer.Option(help="Champion's accuracy.")] = 0.9,
    challenger_accuracy: Annotated[float, typer.Option(help="Challenger's accuracy.")] = 0.9,
    agreement: Annotated[float, typer.Option(help="Share of events both get the same.")] = 0.0,
    alpha: Annotated[float, typer.Option(help="Level of the sequential test.")] = 0.05,
    min_paired_labels: Annotated[int, typer.Option(help="Guard: paired labels.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    as_json: JsonFlag = False,
) -> None:
    """The controller's promotion rate on seeded streams, watched after every batch
    (equal accuracies: the false-promotion rate, bounded by alpha)."""
    from streams.autopilot.simulation import simulate as run_simulation

    if not 0 < alpha < 1 or not 0 <= agreement <= 1:
        raise ConfigError("--alpha must be in (0, 1) and --agreement in [0, 1]")
    try:
        result = run_simulation(
            runs=runs, labels=labels, batch=batch, champion_accuracy=champion_accuracy,
            challenger_accuracy=challenger_accuracy, agreement=agreement, alpha=alpha,
            min_paired_labels=min_paired_labels, seed=seed,
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    summary = result.as_dict()
    if as_json:
        print_json(summary)
        return
    table = Table(title="autopilot: promotions on seeded streams", show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    Console().print(table)
