"""The `whystream` command line run in a child process, and the files a user hands it."""

from __future__ import annotations

import csv

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from support.objective_models import FEATURES
from whystream.cli import app
from whystream.errors import WhystreamError


def cli(registry, *args) -> tuple[int, str]:
    """(exit code, output) of `whystream --registry R ARGS`, as main() reports a WhystreamError."""
    result = CliRunner().invoke(app, ["--registry", str(registry), *args])
    if isinstance(result.exception, WhystreamError):
        return 2, f"whystream: error: {result.exception}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def write_parquet(path, X, names=FEATURES):
    pq.write_table(pa.table({n: X[:, j] for j, n in enumerate(names)}), path)
    return path


def write_csv(path, X, names=FEATURES):
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(names)
        for row in X:
            out.writerow(["" if np.isnan(v) else repr(float(v)) for v in row])
    return path
