"""`whystream train / register / promote / models`: the model lifecycle commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from whystream.cli.common import console, parse_features, settings_of
from whystream.config import Settings
from whystream.errors import WhystreamError

commands = typer.Typer()


@commands.command()
def train(ctx: typer.Context, name: str = typer.Option("fraud", help="Model name"),
          rows: int = typer.Option(200_000, help="Training rows"),
          trees: int = typer.Option(300), leaves: int = typer.Option(31), seed: int = typer.Option(7),
          redact: str = typer.Option("", help="FEATURE,... whose values never appear in this model's explanations")):
    """Train the LightGBM fraud model on synthetic transactions and register it."""
    from whystream.jobs.simulation.train import train_model
    from whystream.models.registry import ModelRegistry

    model = train_model(ModelRegistry(settings_of(ctx).registry), name=name, n_train=rows, seed=seed,
                        num_trees=trees, num_leaves=leaves, redact=tuple(parse_features(redact)))
    console.print(f"registered [bold]{model.name}[/] version [bold]{model.version}[/] "
                  f"(AUC {model.metrics.get('auc', float('nan')):.3f}, threshold {model.threshold:.4f}) in {model.path}")
    _announce(settings_of(ctx), model, "CHAMPION")


def _announce(settings: Settings, model, role: str, promoted: bool = False) -> None:
    """Tell the workers over `models` (whystream/models/events.py); without a broker, say what that means."""
    from whystream.errors import ConfigError
    from whystream.models.events import announce, model_event

    try:
        announce(settings, model_event(model, role, promoted))
    except ConfigError as exc:  # no broker configured or reachable: the registry alone still works
        console.print(f"[yellow]not announced on `models` ({exc}): running workers load {model.name}@"
                      f"{model.version} when its first event arrives[/]", highlight=False)
        return
    console.print(f"announced {model.name}@{model.version} as {role.lower()} on {settings.topic('models')}",
                  highlight=False)


@commands.command()
def register(ctx: typer.Context,
             name: str = typer.Argument(..., help="Model name (producers send it as model_name)"),
             model_file: str = typer.Argument(..., help="The model as its library saves it: LightGBM text, XGBoost "
                                                        "JSON / UBJSON (whystream[xgboost]); or an MLflow model URI "
                                                        "(models:/NAME/VERSION, runs:/...) with whystream[mlflow]"),
             reference: Path = typer.Option(..., help="Held-out rows, Parquet or CSV, one column per feature (>= 1,000 rows)"),
             threshold: Optional[float] = typer.Option(None, help="What decisions are taken against (required for binary)"),
             reason_codes: Optional[Path] = typer.Option(None, help="CSV (feature,code,text) or JSON reason-code table"),
             adverse_when_lower: bool = typer.Option(False, "--adverse-when-lower",
                                                     help="A lower score is the adverse outcome (default: higher)"),
             redact: str = typer.Option("", help="FEATURE,... whose values never appear in explanations "
                                                 "(attributions stay)"),
             challenger_of: Optional[str] = typer.Option(None, help="Register as the challenger of this (live) "
                                                                    "model: a version of NAME that workers explain "
                                                                    "in the shadow of its champion")):
    """Register your own LightGBM or XGBoost model, with its SHAP reference (and reason codes)."""
    from whystream.models.register import describe, register_model
    from whystream.models.registry import ModelRegistry

    if challenger_of is not None and challenger_of != name:
        raise WhystreamError(f"--challenger-of {challenger_of}: a challenger is a version of the model it "
                             f"challenges; register it as {challenger_of} (`whystream register {challenger_of} "
                             f"... --challenger-of {challenger_of}`)")
    model = register_model(ModelRegistry(settings_of(ctx).registry), name, model_file, reference, threshold,
                           reason_codes, -1 if adverse_when_lower else 1, redact=parse_features(redact),
                           challenger=challenger_of is not None)
    for label, value in describe(model):
        console.print(f"{label:>15}: {value}", highlight=False, soft_wrap=True)
    _announce(settings_of(ctx), model, "CHALLENGER" if challenger_of else "CHAMPION")


@commands.command()
def promote(ctx: typer.Context, name: str = typer.Argument(..., help="Model name"),
            version: str = typer.Argument(..., help="The version (e.g. its challenger) to make the champion")):
    """Make VERSION the champion of NAME (its LATEST), and tell the workers over `models`."""
    from whystream.models.registry import ModelRegistry

    model = ModelRegistry(settings_of(ctx).registry).promote(name, version)
    console.print(f"{model.name}@{model.version} is the champion", highlight=False)
    _announce(settings_of(ctx), model, "CHAMPION", promoted=True)


@commands.command()
def models(ctx: typer.Context, name: Optional[str] = typer.Argument(None, help="Show this model's latest version in detail"),
           version: Optional[str] = typer.Option(None, help="With NAME: this version instead of the latest")):
    """List registered models and versions, or show one version in detail."""
    from rich.table import Table

    from whystream.models.catalog import COLUMNS, model_rows
    from whystream.models.register import describe
    from whystream.models.registry import ModelRegistry

    registry = ModelRegistry(settings_of(ctx).registry)
    if name:
        for label, value in describe(registry.load(name, version)):
            console.print(f"{label:>15}: {value}", highlight=False, soft_wrap=True)
        console.print()
    rows = model_rows(registry, name)
    if not rows:
        console.print(f"no models in registry {registry.root}; `whystream register` or `whystream train` adds one")
        return
    table = Table(*COLUMNS)
    for row in rows:
        table.add_row(*row)
    Console(width=max(console.width, 140)).print(table)  # versions in full, also in a log file
