"""Whole-body centre of mass from BlazePose landmarks and segment mass fractions.

Segment masses (fraction of body mass) and the position of each segment's centre of mass
along it (fraction of the segment's length from its proximal end) are the adult *male*
values of de Leva, P. (1996), "Adjustments to Zatsiorsky-Seluyanov's segment inertia
parameters", Journal of Biomechanics 29(9):1223-1230, table 4 (the female column differs by
at most ~1.5 % of body mass per segment, well inside the landmark noise of a monocular
model). The fractions sum to 1.0.

BlazePose has no vertex, C7 or joint centres, so its landmarks stand in for de Leva's
endpoints: head = the midpoint of the ears (its centre of mass is placed there), trunk =
mid-shoulders → mid-hips (CERV → MIDH), upper arm = shoulder → elbow, forearm = elbow →
wrist, hand = wrist → midpoint of the index and pinky knuckles (≈ MET3), thigh = hip → knee,
shank = knee → ankle (≈ LMAL), foot = heel → foot index (TTIP). The result is therefore an
estimate, good to a few centimetres on a typical pose, not a lab measurement.

Works on world landmarks (metres, hip-centred; use it for distances) and on image landmarks
(normalised ``x, y``; use it only to draw the centre of mass on the video).
"""

from __future__ import annotations

import numpy as np

__all__ = ["DE_LEVA_SEGMENTS", "centre_of_mass"]

#: (name, proximal landmark(s), distal landmark(s), mass fraction, CoM fraction from proximal).
#: Landmark tuples are averaged. Values: de Leva (1996) table 4, males.
DE_LEVA_SEGMENTS: tuple[tuple[str, tuple[int, ...], tuple[int, ...], float, float], ...] = (
    ("head", (7, 8), (7, 8), 0.0694, 0.0),
    ("trunk", (11, 12), (23, 24), 0.4346, 0.4486),
    ("left_upper_arm", (11,), (13,), 0.0271, 0.5772),
    ("right_upper_arm", (12,), (14,), 0.0271, 0.5772),
    ("left_forearm", (13,), (15,), 0.0162, 0.4574),
    ("right_forearm", (14,), (16,), 0.0162, 0.4574),
    ("left_hand", (15,), (17, 19), 0.0061, 0.7900),
    ("right_hand", (16,), (18, 20), 0.0061, 0.7900),
    ("left_thigh", (23,), (25,), 0.1416, 0.4095),
    ("right_thigh", (24,), (26,), 0.1416, 0.4095),
    ("left_shank", (25,), (27,), 0.0433, 0.4459),
    ("right_shank", (26,), (28,), 0.0433, 0.4459),
    ("left_foot", (29,), (31,), 0.0137, 0.4415),
    ("right_foot", (30,), (32,), 0.0137, 0.4415),
)


def _weights() -> np.ndarray:
    """(33,) landmark weights whose weighted sum is the centre of mass."""
    w = np.zeros(33, np.float64)
    for _, prox, dist, mass, frac in DE_LEVA_SEGMENTS:
        for i in prox:
            w[i] += mass * (1.0 - frac) / len(prox)
        for i in dist:
            w[i] += mass * frac / len(dist)
    return w


_W = _weights()


def centre_of_mass(points: np.ndarray) -> np.ndarray:
    """The whole-body centre of mass of one pose or a series.

    Args:
        points: ``(33, D)`` or ``(n, 33, D)`` landmark coordinates (world metres, or image
            ``x, y`` — only the first 3 columns are used when ``D > 3``).

    Returns:
        ``(D',)`` or ``(n, D')`` with ``D' = min(D, 3)``, in the input's units. NaN where a
        needed landmark is NaN.

    Raises:
        ValueError: the array does not have 33 landmarks.
    """
    a = np.asarray(points, np.float64)
    if a.ndim not in (2, 3) or a.shape[-2] != 33:
        raise ValueError(f"expected (33, D) or (n, 33, D) landmarks, got {a.shape}")
    a = a[..., : min(a.shape[-1], 3)]
    return np.tensordot(_W, a, axes=([0], [-2])) if a.ndim == 2 else \
        np.einsum("l,nld->nd", _W, a)
