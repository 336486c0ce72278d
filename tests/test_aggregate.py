"""Track/video score aggregation: the DFDC confident strategy against its golden cases, the mean, edge cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.aggregate import (
    DEFAULT_METHOD,
    aggregate,
    confident_strategy,
    dfdc_ensemble_score,
    mean_strategy,
)

CASES = (
    "many_fakes", "all_real", "mixed", "edge_12_of_30", "edge_13_of_30",
    "few_fakes_11", "real_90pct", "real_just_under",
)


@pytest.fixture(scope="module")
def golden(specs_dir: Path) -> dict[str, np.ndarray]:
    with np.load(specs_dir / "dfdc_effnet_b7" / "golden" / "dfdc_preproc_and_strategy.npz") as z:
        return {k: z[k] for k in z.files if k.startswith("strategy__")}


def test_golden_has_all_cases(golden: dict[str, np.ndarray]) -> None:
    assert {k.split("__")[1] for k in golden} == set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_confident_strategy_golden(golden: dict[str, np.ndarray], case: str) -> None:
    pred = golden[f"strategy__{case}__pred"]
    want = float(golden[f"strategy__{case}__result"])
    assert abs(confident_strategy(pred) - want) <= 1e-12
    assert abs(aggregate(pred, method="confident") - want) <= 1e-12
    assert abs(confident_strategy(list(pred)) - want) <= 1e-12  # plain lists work too


def test_confident_strategy_branches() -> None:
    assert confident_strategy([0.9] * 12 + [0.3] * 18) == pytest.approx(0.54)  # 12 is not > floor(30/2.5)
    assert confident_strategy([0.9] * 13 + [0.3] * 17) == pytest.approx(0.9)
    assert confident_strategy([0.95] * 11) == pytest.approx(0.95)  # 11 confident fakes fail "> 11": plain mean
    assert confident_strategy([0.1] * 10 + [0.5]) == pytest.approx(0.1)  # 10 of 11 < 0.2 is > 90%
    # the fake threshold is a parameter, the real one is the reference's fixed 0.2
    assert confident_strategy([0.7] * 12 + [0.1] * 3, t=0.6) == pytest.approx(0.7)


def test_mean() -> None:
    assert mean_strategy([0.2, 0.4, 0.9]) == pytest.approx(0.5)
    assert aggregate(np.array([0.2, 0.4, 0.9]), method="mean") == pytest.approx(0.5)
    assert aggregate([0.25]) == 0.25


def test_default_is_mean() -> None:
    assert DEFAULT_METHOD == "mean"
    few_confident_false_positives = [0.95] * 12 + [0.3] * 18
    assert aggregate(few_confident_false_positives) == pytest.approx(np.mean(few_confident_false_positives))
    from models.registry import spec

    assert spec("efficientnet_b7").preprocess.aggregation == "confident"
    assert spec("mesonet").preprocess.aggregation == "mean"


@pytest.mark.parametrize("fn", [confident_strategy, mean_strategy, aggregate])
def test_empty_input_raises(fn) -> None:
    with pytest.raises(ValueError, match="empty"):
        fn([])


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="unknown aggregation method"):
        aggregate([0.5], method="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        mean_strategy([0.5, float("nan")])


def test_dfdc_ensemble_score_is_per_model_then_mean() -> None:
    a = [0.9] * 13 + [0.3] * 17  # confident branch → 0.9
    b = [0.1] * 30  # real branch → 0.1
    assert dfdc_ensemble_score([a, b]) == pytest.approx(0.5)
    # not the same as the rule applied to the per-face ensemble mean
    assert confident_strategy(np.mean([a, b], axis=0)) != pytest.approx(0.5)
    with pytest.raises(ValueError):
        dfdc_ensemble_score([])
