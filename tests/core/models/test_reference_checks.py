"""Registration's checks of a translated model (whystream/models/reference.py): raw scores on
every reference row, SHAP values on SELF_CHECK_ROWS of them spread over the file, the
library's own SHAP asked only for those."""

from __future__ import annotations

import numpy as np
import pytest

from support.objective_models import make_rows, train
from whystream.errors import UnsupportedModel
from whystream.models.families import Translated
from whystream.models.objectives import model_kind
from whystream.models.reference import SELF_CHECK_ROWS, check_kernel, check_own, shap_sample


@pytest.fixture(scope="module")
def booster():
    return train("regression", n=1000, rounds=5)


def _translated(booster, wrong_row: int | None, asked: list):
    def own(X, contributions=True):
        asked.append((len(X), contributions))
        raw = booster.predict(X, raw_score=True).reshape(len(X), 1)
        if wrong_row is not None and len(X) > wrong_row:
            raw[wrong_row] += 1e-3  # one row the library predicts otherwise
        contrib = booster.predict(X, pred_contrib=True).reshape(len(X), 1, -1) if contributions else None
        return raw, contrib

    return Translated(family="test", booster=booster, library="test 1.0", own=own)


def test_raw_scores_are_checked_on_every_row_and_shap_on_a_sample(booster):
    X = make_rows(3 * SELF_CHECK_ROWS + 7, 5)
    kind = model_kind(booster.model_to_string())
    sample = shap_sample(X)
    assert len(sample) == SELF_CHECK_ROWS and np.array_equal(sample[0], X[0], equal_nan=True)
    assert np.array_equal(sample[-1], X[-1], equal_nan=True)  # spread to the file's end, not its first rows
    asked: list = []
    check_own(booster, kind, _translated(booster, None, asked), X)
    check_kernel(booster, kind, X)
    assert sorted(asked) == sorted([(len(X), False), (SELF_CHECK_ROWS, True)])
    # a row outside any SHAP sample still differs: refused, naming it
    wrong = len(X) - 2
    assert not any(np.array_equal(row, X[wrong], equal_nan=True) for row in sample)
    with pytest.raises(UnsupportedModel, match=f"raw scores differ from test 1.0's own by 0.001 on reference row "
                                               f"{wrong + 1} "):
        check_own(booster, kind, _translated(booster, wrong, []), X)
