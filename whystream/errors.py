"""The error types whystream raises on purpose.

Every error a user can cause (bad configuration, bad input, a missing model)
derives from WhystreamError, so the CLI can print it as one readable line
instead of a traceback.
"""


class WhystreamError(Exception):
    """An error with a message meant for a person; the CLI prints it as is."""


class ConfigError(WhystreamError):
    """A setting is missing, malformed or points at something unreachable."""

    def __init__(self, setting: str, problem: str):
        self.setting = setting
        super().__init__(f"{setting}: {problem}")


class DecodeError(WhystreamError):
    """Bytes that are not a valid event of the expected schema."""


class ModelNotFound(WhystreamError):
    """An unknown model name or version was asked of the registry."""


class UnsupportedModel(WhystreamError, ValueError):
    """A LightGBM model this explainer cannot explain exactly (linear trees, random forests, ...)."""
