"""`whystream train / register / promote / models`: the model lifecycle commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from whystream.cli.common import console, parse_features, settings_of
from whystream.cli.output import Format, emit, format_option, print_json, print_line
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
                                                        "JSON / UBJSON (whystream\\[xgboost]), a scikit-learn skops "
                                                        "file (whystream\\[sklearn]; never a pickle), CatBoost .cbm / "
                                                        "JSON (whystream\\[catboost]); or an MLflow model URI "
                                                        "(models:/NAME/VERSION, runs:/...) with whystream\\[mlflow]"),
             reference: Path = typer.Option(..., help="Held-out rows, Parquet or CSV, one column per feature (>= 1,000 rows)"),
             threshold: Optional[float] = typer.Option(None, help="What decisions are taken against (required for binary "
                                                                  "classifiers, forests too: a probability)"),
             reason_codes: Optional[Path] = typer.Option(None, help="CSV (feature,code,text) or JSON reason-code table"),
             adverse_when_lower: bool = typer.Option(False, "--adverse-when-lower",
                                                     help="A lower score is the adverse outcome (default: higher)"),
             redact: str = typer.Option("", help="FEATURE,... whose values never appear in explanations "
                                                 "(attributions stay)"),
             challenger_of: Optional[str] = typer.Option(None, help="Register as the challenger of this (live) "
                                                                    "model: a version of NAME that workers explain "
                                                                    "in the shadow of its champion")):
    """Register your own LightGBM, XGBoost, scikit-learn or CatBoost model, with its SHAP reference (and reason codes)."""
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
def models(ctx: typer.Context, name: Optional[str] = typer.Argument(None, help="Show this model's latest version in "
                                                                    "detail, with its feature names"),
           version: Optional[str] = typer.Option(None, help="With NAME: this version instead of the latest"),
           fmt: Format = format_option()):
    """List registered models and versions, or show one version in detail with its features.

    json: the list of versions; with NAME, one object (the version's details, `features`
    with each feature's name, categorical, redacted and reason code, and `versions`)."""
    from whystream.models.catalog import COLUMNS, model_rows
    from whystream.models.register import describe
    from whystream.models.registry import ModelRegistry

    registry = ModelRegistry(settings_of(ctx).registry)
    if version is not None and name is None:
        raise WhystreamError("--version needs a model NAME (`whystream models NAME --version V`)")
    versions = model_rows(registry, name)  # ModelNotFound for an unknown NAME
    model = registry.load(name, version) if name else None  # ... and for an unknown version
    if fmt == Format.json:
        print_json(model_details(model, versions) if model else versions)
        return
    if model and fmt == Format.csv:
        emit(feature_rows(model), fmt)
        return
    if model:
        for label, value in describe(model):
            print_line(f"{label:>15}: {value}")
        emit(feature_rows(model), fmt, spaced=True, title=f"{len(model.feature_names)} features, in model order "
                                             "(producers send them by these names)")
    if not versions:
        print_line(f"no models in registry {registry.root}; `whystream register` or `whystream train` adds one")
        return
    emit(versions, fmt, COLUMNS, cells=version_cell, right=("features", "reference_rows"), spaced=True)


def version_cell(row: dict, column: str) -> str:
    value = row[column]
    if column == "latest":
        return "latest" if value else ""
    if column == "registered_at":
        return value[:16].replace("T", " ")
    if column == "reference_rows":
        return f"{value:,}"
    return "-" if value is None else str(value)


def feature_rows(model) -> list[dict]:
    codes = dict(zip(model.feature_names, model.reason_codes)) if model.reason_codes else {}
    return [{"feature": f, "categorical": f in model.categorical_features, "redacted": f in model.redacted_features,
             "reason_code": codes[f][0] if f in codes else f, "reason_text": codes[f][1] if f in codes else ""}
            for f in model.feature_names]


def model_details(model, versions: list[dict]) -> dict:
    kind = model.kind
    return {"model": model.name, "version": model.version, "objective": kind.objective, "classes": kind.n_outputs,
            "output_space": kind.output_space, "threshold": model.threshold if model.has_threshold else None,
            "adverse_when": "higher" if model.adverse_direction > 0 else "lower",
            "reference_rows": len(model.reference_shap), "reason_codes_version": model.reason_codes_version,
            "redacted": sorted(model.redacted_features), "registered_at": model.created_at,
            "source": model.source or None, "path": str(model.path), "metrics": model.metrics,
            "features": feature_rows(model),
            "versions": versions}
