"""Every path the docs and the code's docstrings and comments name is a file or folder of
the checkout: after a file moves, nothing points at where it was."""

from __future__ import annotations

import re

from support import REPO

TOP = ("whystream", "streams", "jobs", "infra", "schemas", "tests", "docs", "bench", "examples", ".ci")
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./*-]*[\w*/])" % "|".join(re.escape(t) for t in TOP))
# Where paths are written for people: the docs, the schemas' docs, SQL comments and the code itself.
# Not the migrations of schemas/clickhouse/: an applied migration never changes (its checksum is recorded),
# so its comments keep the paths of its day.
TEXTS = ("*.md", "docs/*.md", "bench/README.md", "infra/**/*.md", "infra/**/*.service", "infra/**/*.example",
         "whystream/**/*.py", "streams/**/*.py", "jobs/**/*.py",
         "infra/**/*.py", "bench/*.py", "examples/*.py", "tests/**/*.py", "Makefile", ".ci/run", "pyproject.toml")
# Written, not kept: what the benchmarks write.
NOT_IN_GIT = ("bench/results/",)
# Placeholders in a path, not a path: schemas/NAME.avsc, schemas/clickhouse/NNN_name.sql, bench/...py
PLACEHOLDERS = ("NAME", "NNN", "...")


def named_paths() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for pattern in TEXTS:
        for file in REPO.glob(pattern):
            relative = str(file.relative_to(REPO))
            if ".venv" in file.parts:
                continue
            for path in PATH.findall(file.read_text(errors="replace")):
                found.setdefault(path.rstrip("."), set()).add(relative)
    return found


def exists(path: str) -> bool:
    if path.startswith(NOT_IN_GIT) or any(p in path for p in PLACEHOLDERS):
        return True
    if "*" in path:
        return any(REPO.glob(path))
    return (REPO / path).exists()


def test_every_named_path_exists():
    missing = {path: sorted(where) for path, where in named_paths().items() if not exists(path)}
    assert missing == {}


def test_the_checker_finds_paths():
    found = named_paths()
    assert "streams/engine.py" in found and "docs/design.md" in found
