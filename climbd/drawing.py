"""Skeleton geometry and drawing on numpy images (pure functions, OpenCV only).

The skeleton is always drawn from the recorded **image** landmarks: ``x, y`` normalised to
the frame, multiplied by the frame's width and height in pixels. World landmarks (metres,
hip-centred) are never positions on the image.

:func:`skeleton_geometry` gives the pixel positions and which joints and bones are shown,
so every view (live overlay, replay, ghost, burned-in export) can share the same geometry;
:func:`draw_skeleton` draws it with ``cv2.line`` / ``cv2.circle`` into an ``(H, W, 3)``
uint8 image, in place.

Conventions: a landmark is shown when its ``visibility`` is at least ``min_visibility`` and
its ``presence`` is at least that too or NaN (the legacy MediaPipe graph leaves presence
empty), the same rule as MediaPipe's own drawing utilities (threshold 0.5). Pixel
coordinates are ``x * width`` and ``y * height``, kept with sub-pixel precision (OpenCV's
convention: integer coordinates are pixel centres, so ``round(x * width)`` is the column of
the pixel a joint is centred on).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from climbd.pose import NUM_LANDMARKS, POSE_CONNECTIONS

__all__ = ["DEFAULT_STYLE", "Skeleton", "SkeletonStyle", "draw_skeleton", "skeleton_geometry"]

_SHIFT = 4  # fractional bits of the sub-pixel coordinates handed to OpenCV
_SCALE = 1 << _SHIFT

Color = tuple[int, int, int]


@dataclass(frozen=True)
class SkeletonStyle:
    """How a skeleton looks.

    Colours are triples in the *image's* channel order (the defaults are given for RGB
    images; reverse them for BGR). Sizes in pixels; 0 means "scale with the frame": bone
    thickness ``max(2, min(w, h) / 240)``, joint radius ``max(3, min(w, h) / 120)``.

    Attributes:
        bone_color: colour of the connections. joint_color: fill of the joints.
        bone_thickness, joint_radius: pixels, or 0 for the frame-relative default.
        min_visibility: landmarks below this visibility (or presence) are hidden.
    """

    bone_color: Color = (0, 255, 0)
    joint_color: Color = (255, 0, 0)
    bone_thickness: int = 0
    joint_radius: int = 0
    min_visibility: float = 0.5

    def sizes(self, width: int, height: int) -> tuple[int, int]:
        """``(bone_thickness, joint_radius)`` in pixels for a ``width`` x ``height`` frame."""
        short = min(width, height)
        thickness = self.bone_thickness or max(2, round(short / 240))
        radius = self.joint_radius or max(3, round(short / 120))
        return int(thickness), int(radius)


#: Green bones, red joints (RGB), sized to the frame, visibility threshold 0.5.
DEFAULT_STYLE = SkeletonStyle()


@dataclass(frozen=True)
class Skeleton:
    """The drawable geometry of one pose on one frame.

    Attributes:
        points: ``(33, 2)`` float64 pixel coordinates ``(x, y)`` (may lie outside the frame).
        visible: ``(33,)`` bool, the landmarks that are shown.
        bones: the :data:`~climbd.pose.POSE_CONNECTIONS` pairs whose both ends are shown.
    """

    points: np.ndarray
    visible: np.ndarray
    bones: tuple[tuple[int, int], ...]


def skeleton_geometry(landmarks: np.ndarray, width: int, height: int,
                      min_visibility: float = 0.5) -> Skeleton:
    """Pixel positions and shown joints/bones of one pose.

    Args:
        landmarks: ``(33, 5)`` image landmarks ``x, y, z, visibility, presence`` (x, y
            normalised to the frame), or ``(33, 2)``/``(33, 3)`` (then every landmark with
            finite coordinates is shown).
        width, height: frame size in pixels.
        min_visibility: visibility/presence threshold (0..1).

    Raises:
        ValueError: ``landmarks`` does not have 33 rows of at least 2 columns, or the frame
            size is not positive.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] != NUM_LANDMARKS or lm.shape[1] < 2:
        raise ValueError(f"expected ({NUM_LANDMARKS}, 5) image landmarks, got {lm.shape}")
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    points = lm[:, :2] * np.array([width, height], np.float64)
    visible = np.isfinite(points).all(axis=1)
    if lm.shape[1] >= 4:
        visible &= lm[:, 3] >= min_visibility
    if lm.shape[1] >= 5:
        presence = lm[:, 4]
        visible &= np.isnan(presence) | (presence >= min_visibility)
    bones = tuple((a, b) for a, b in POSE_CONNECTIONS if visible[a] and visible[b])
    return Skeleton(points, visible, bones)


def draw_skeleton(image: np.ndarray, landmarks: np.ndarray,
                  style: SkeletonStyle = DEFAULT_STYLE) -> np.ndarray:
    """Draw one pose's skeleton into ``image`` (in place) and return ``image``.

    Bones first, then joints on top, anti-aliased, with sub-pixel positions.

    Args:
        image: ``(H, W, 3)`` uint8, C-contiguous and writable, in the channel order of the
            style's colours.
        landmarks: ``(33, 5)`` image landmarks (see :func:`skeleton_geometry`).
        style: colours, sizes and visibility threshold.

    Raises:
        ValueError: bad image or landmark shapes.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    sk = skeleton_geometry(landmarks, width, height, style.min_visibility)
    thickness, radius = style.sizes(width, height)
    # Sub-pixel fixed point; clamp far-off points so the int conversion cannot overflow.
    limit = 4 * max(width, height)
    fixed = np.round(np.clip(sk.points, -limit, limit) * _SCALE).astype(np.int64)
    for a, b in sk.bones:
        cv2.line(image, (int(fixed[a, 0]), int(fixed[a, 1])),
                 (int(fixed[b, 0]), int(fixed[b, 1])), style.bone_color, thickness,
                 cv2.LINE_AA, _SHIFT)
    for i in np.flatnonzero(sk.visible):
        cv2.circle(image, (int(fixed[i, 0]), int(fixed[i, 1])), radius * _SCALE,
                   style.joint_color, -1, cv2.LINE_AA, _SHIFT)
    return image
