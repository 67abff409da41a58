"""`whystream models`: what the registry holds, from each version's meta.json."""

from __future__ import annotations

from whystream.models.registry import ModelRegistry

COLUMNS = ("model", "version", "objective", "features", "reference rows", "reason codes", "registered at", "latest")


def model_rows(registry: ModelRegistry, name: str | None = None) -> list[tuple[str, ...]]:
    """One row per version (COLUMNS), models by name, versions oldest first. ModelNotFound for
    an unknown `name`."""
    rows = []
    for model in [name] if name else registry.models():
        latest = registry.latest(model)
        for version in registry.versions(model):
            meta = registry.meta(model, version)
            objective = meta.get("objective", "binary")
            if meta.get("n_outputs", 1) > 1:
                objective += f" ({meta['n_outputs']} classes)"
            rows.append((model, version, objective, str(len(meta["feature_names"])), f"{meta['n_reference']:,}",
                         meta.get("reason_codes_version") or "-", meta["created_at"][:16].replace("T", " "),
                         "latest" if version == latest else ""))
    return rows
