"""Every `>>>` example in the package's docstrings runs, module by module.

Not `pytest --doctest-modules`: pyproject.toml maps folders to subpackages
(`streams/` is `whystream.streams`), and pytest would import `streams/engine.py`
a second time as a module `streams.engine`. Here each module is imported by its
real name (tests/test_architecture.py lists them) and its examples run with the
standard library's doctest.
"""

from __future__ import annotations

import doctest
import importlib

import pytest
from test_architecture import modules

WITH_EXAMPLES = sorted(name for name, path in modules().items() if ">>>" in path.read_text())


def test_the_package_has_examples():
    assert len(WITH_EXAMPLES) >= 8


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_examples_run(name):
    module = importlib.import_module(name)
    results = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert results.attempted > 0, f"{name} mentions >>> but has no example doctest can run"
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples of {name} failed (see above)"
