"""7 class probabilities -> (valence, arousal): table-driven."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.affect.projection import FER_CLASSES, FER_VA, project_va


@pytest.mark.parametrize(
    ("cls", "va"),
    [
        ("angry", (-0.51, 0.59)),
        ("disgust", (-0.60, 0.35)),
        ("fear", (-0.64, 0.60)),
        ("happy", (0.81, 0.51)),
        ("sad", (-0.63, -0.27)),
        ("surprise", (0.40, 0.67)),
        ("neutral", (0.0, 0.0)),
    ],
)
def test_one_hot_gives_the_category_coordinates(cls: str, va: tuple[float, float]) -> None:
    p = np.zeros((1, 7), np.float32)
    p[0, FER_CLASSES.index(cls)] = 1.0
    np.testing.assert_allclose(project_va(p)[0], va, atol=1e-6)


def test_mixture_is_the_weighted_mean() -> None:
    p = np.zeros((2, 7), np.float32)
    p[0, FER_CLASSES.index("happy")] = 0.5
    p[0, FER_CLASSES.index("sad")] = 0.5
    p[1] = 1.0 / 7  # uniform
    va = project_va(p)
    np.testing.assert_allclose(va[0], [(0.81 - 0.63) / 2, (0.51 - 0.27) / 2], atol=1e-6)
    np.testing.assert_allclose(va[1], FER_VA.mean(axis=0), atol=1e-6)
    assert va.dtype == np.float32 and va.shape == (2, 2)
    assert np.all(np.abs(va) <= 1.0)


def test_unnormalised_rows_are_renormalised() -> None:
    p = np.zeros((1, 7), np.float32)
    p[0, FER_CLASSES.index("happy")] = 3.0
    np.testing.assert_allclose(project_va(p)[0], [0.81, 0.51], atol=1e-6)


@pytest.mark.parametrize(
    "row",
    [np.full(7, np.nan), np.zeros(7), np.r_[np.inf, np.zeros(6)]],
    ids=["nan", "zero-sum", "inf"],
)
def test_bad_rows_become_nan_and_leave_others_alone(row: np.ndarray) -> None:
    p = np.stack([row, np.eye(7)[FER_CLASSES.index("happy")]]).astype(np.float32)
    va = project_va(p)
    assert np.isnan(va[0]).all()
    np.testing.assert_allclose(va[1], [0.81, 0.51], atol=1e-6)


def test_empty_batch() -> None:
    assert project_va(np.zeros((0, 7), np.float32)).shape == (0, 2)


@pytest.mark.parametrize("shape", [(7,), (3, 6), (2, 7, 1)])
def test_wrong_shape_is_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expected probabilities of shape"):
        project_va(np.ones(shape, np.float32))


def test_the_reach_of_the_projection_is_the_hull_of_its_categories() -> None:
    """What docs/affect.md says the embedded model cannot say."""
    from streamer.affect.projection import category_hull

    hull = category_hull()
    corners = {FER_CLASSES[int(np.argmin(np.abs(FER_VA - c).sum(axis=1)))] for c in hull}
    assert corners == {"sad", "neutral", "happy", "surprise", "fear"}
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(7, 0.3), size=20_000).astype(np.float32)
    va = project_va(probs).astype(np.float64)
    # inside (or on) every counter-clockwise edge
    for a, b in zip(hull, np.roll(hull, -1, axis=0), strict=True):
        cross = (b[0] - a[0]) * (va[:, 1] - a[1]) - (b[1] - a[1]) * (va[:, 0] - a[0])
        assert cross.min() >= -1e-5
    assert not np.any((va[:, 0] > 0.01) & (va[:, 1] < -0.01)), "no calm (v > 0, a < 0)"
    assert va[:, 0].max() <= 0.81 + 1e-6, "valence never above happy's"
