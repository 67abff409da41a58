"""`whystream models`: what the registry holds, from each version's meta.json."""

from __future__ import annotations

from whystream.models.registry import ModelRegistry

COLUMNS = ("model", "version", "objective", "features", "reference_rows", "reason_codes", "registered_at", "latest")


def model_rows(registry: ModelRegistry, name: str | None = None) -> list[dict]:
    """One row per version ({COLUMNS: value}, numbers as numbers), models by name, versions
    oldest first. ModelNotFound for an unknown `name`."""
    rows = []
    for model in [name] if name else registry.models():
        versions = registry.versions(model)  # ModelNotFound first
        latest = registry.latest(model)
        for version in versions:
            meta = registry.meta(model, version)
            objective = meta.get("objective", "binary")
            if meta.get("n_outputs", 1) > 1:
                objective += f" ({meta['n_outputs']} classes)"
            rows.append(dict(zip(COLUMNS, (model, version, objective, len(meta["feature_names"]), meta["n_reference"],
                                           meta.get("reason_codes_version"), meta["created_at"],
                                           version == latest))))
    return rows
