"""ExplanationEvents: built as records from a batch's attributions (`records`: top and
principal reasons, redaction), or encoded straight from the arrays, byte for byte the
same (`encoder`)."""
