"""Reason-code tables: feature -> (code, text), registered with a model version.

For an adverse decision the ExplanationEvent carries up to four *principal
reasons*: the features whose attributions pushed the score toward the adverse
outcome, strongest first (what an adverse-action notice needs: US Reg B asks
for the specific principal reasons, no more than four, and they must be factors
the model actually scored). Each reason gets its feature's code and text from
the table; a feature the table does not list, or a model registered without a
table, gets its own name as code and text.

A table is CSV (header `feature,code,text`) or JSON (an object
`{"feature": {"code": ..., "text": ...}}` or a list of `{"feature", "code",
"text"}` objects). Its version is a content hash of the normalised table
(features in the model's order), so the same table always has the same version
and the model version, which hashes it, changes with it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from whystream.errors import WhystreamError

MAX_PRINCIPAL_REASONS = 4


@dataclass(frozen=True)
class ReasonCodes:
    entries: tuple[tuple[str, str, str], ...]  # (feature, code, text), in the model's feature order
    version: str

    def to_json(self) -> list[dict]:
        return [{"feature": f, "code": c, "text": t} for f, c, t in self.entries]


def load_reason_codes(path: Path | str, feature_names: list[str]) -> ReasonCodes:
    """The table in `path` for a model with `feature_names`; WhystreamError naming the
    file and the problem (unknown feature, empty code, duplicate, unreadable)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WhystreamError(f"reason codes {path}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    rows = _json_rows(path, text) if path.suffix.lower() == ".json" else _csv_rows(path, text)
    known = set(feature_names)
    table: dict[str, tuple[str, str]] = {}
    for i, row in enumerate(rows, start=1):
        feature, code, explanation = (str(row.get(k) or "").strip() for k in ("feature", "code", "text"))
        if feature not in known:
            raise WhystreamError(f"reason codes {path}: entry {i}: {feature!r} is not a feature of the model")
        if not code:
            raise WhystreamError(f"reason codes {path}: entry {i} ({feature}): the code is empty")
        if feature in table:
            raise WhystreamError(f"reason codes {path}: feature {feature!r} is listed twice")
        table[feature] = (code, explanation or feature)
    if not table:
        raise WhystreamError(f"reason codes {path}: the table is empty")
    entries = tuple((f, *table[f]) for f in feature_names if f in table)
    digest = hashlib.sha256(json.dumps(entries, ensure_ascii=False).encode()).hexdigest()[:12]
    return ReasonCodes(entries, digest)


def _csv_rows(path: Path, text: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    if not {"feature", "code"} <= set(header):
        raise WhystreamError(f"reason codes {path}: a CSV table needs the header feature,code,text "
                             f"(got {','.join(header) or 'nothing'})")
    reader.fieldnames = header
    return list(reader)


def _json_rows(path: Path, text: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WhystreamError(f"reason codes {path}: not JSON ({exc})") from None
    if isinstance(data, dict):
        if not all(isinstance(v, dict) for v in data.values()):
            raise WhystreamError(f"reason codes {path}: expected {{feature: {{code, text}}}}")
        return [{"feature": k, **v} for k, v in data.items()]
    if isinstance(data, list) and all(isinstance(v, dict) for v in data):
        return data
    raise WhystreamError(f"reason codes {path}: expected an object {{feature: {{code, text}}}} or a list of "
                         "{feature, code, text}")
