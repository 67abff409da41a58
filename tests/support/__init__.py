"""What the tests share: fixtures and helpers, one concern a module (conftest.py
registers the fixtures, so test files import only helpers), and `REPO`, the
checkout's root, for the files tests read (schemas, docs, examples)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
