"""The binary pose chunk format: exact round trip, size budget, corruption detection."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from climbd.errors import StorageError
from climbd.pose import Pose
from climbd.storage.posecodec import (
    BYTES_PER_FRAME,
    BYTES_PER_FRAME_V1,
    FORMAT_VERSION,
    HEADER_SIZE,
    PoseSeries,
    decode_chunk,
    encode_chunk,
)

pytestmark = pytest.mark.unit


def make_series(n: int, *, t0: float = 0.0, frame0: int = 0, seed: int = 0) -> PoseSeries:
    """``n`` random but plausible poses at 30 fps starting at ``t0`` / ``frame0``."""
    rng = np.random.default_rng(seed)
    image = np.empty((n, 33, 5), np.float32)
    image[:, :, :2] = rng.uniform(-0.1, 1.1, (n, 33, 2))
    image[:, :, 2] = rng.normal(0, 0.3, (n, 33))
    image[:, :, 3] = rng.uniform(0, 1, (n, 33))
    image[:, :, 4] = np.nan  # the legacy graph never fills presence
    world = rng.normal(0, 0.5, (n, 33, 3)).astype(np.float32)
    frames = np.arange(frame0, frame0 + n, dtype=np.int32)
    times = t0 + np.arange(n) / 30.0
    return PoseSeries(frames, times, image, world)


def test_version_1_round_trip_is_exact_except_float16_fields() -> None:
    s = make_series(31, t0=12.345678901234, frame0=370)
    s.image[5, 7, 4] = 0.25  # one presence value that is not NaN
    blob = s.encode(version=1)
    assert blob[4] == 1 and len(blob) == HEADER_SIZE + 31 * BYTES_PER_FRAME_V1 == 16 + 31 * 936
    out = decode_chunk(blob)

    assert len(out) == 31
    assert out.frames.dtype == np.int32 and out.times.dtype == np.float64
    assert out.image.dtype == np.float32 and out.world.dtype == np.float32
    assert out.image.shape == (31, 33, 5) and out.world.shape == (31, 33, 3)
    np.testing.assert_array_equal(out.frames, s.frames)
    np.testing.assert_array_equal(out.times, s.times)  # float64: bit exact
    np.testing.assert_array_equal(out.image[:, :, :3], s.image[:, :, :3])
    np.testing.assert_array_equal(out.world, s.world)
    # visibility/presence are float16: 0..1 within half an ulp at 1.0 (2**-11)
    np.testing.assert_allclose(out.image[:, :, 3], s.image[:, :, 3], atol=2**-11, rtol=0)
    assert np.isnan(out.image[:, :, 4]).sum() == 31 * 33 - 1
    assert out.image[5, 7, 4] == 0.25


def test_nan_world_and_extreme_values_survive() -> None:
    s = make_series(3)
    s.world[1] = np.nan
    s.image[2, 0, :3] = (np.float32(1e30), np.float32(-0.0), np.float32(np.inf))
    out = decode_chunk(s.encode(version=1))
    assert np.isnan(out.world[1]).all()
    np.testing.assert_array_equal(out.world[[0, 2]], s.world[[0, 2]])
    assert out.image[2, 0, 0] == np.float32(1e30)
    assert np.signbit(out.image[2, 0, 1]) and out.image[2, 0, 2] == np.inf


def test_version_2_is_quantized_within_the_documented_bounds() -> None:
    s = make_series(64, t0=3.5, frame0=10, seed=3)
    s.image[0, 0, 4] = 0.7
    s.image[1, :, :2] = (-1.49, 2.49)  # well outside the frame, still in range
    s.world[2] = np.nan                # a frame without world landmarks
    blob = s.encode()
    assert FORMAT_VERSION == 2 and blob[4] == 2
    out = decode_chunk(blob)
    np.testing.assert_array_equal(out.frames, s.frames)
    np.testing.assert_array_equal(out.times, s.times)  # times and frames stay exact
    xy = np.abs(out.image[:, :, :2] - s.image[:, :, :2])
    assert xy.max() <= 6.87e-5 + 1e-7                   # 0.09 px of a 1280 px frame
    assert xy.max() > 0                                # it is quantized, not float32
    assert np.abs(out.image[:, :, 2] - s.image[:, :, 2]).max() <= 2.45e-4
    assert np.abs(out.image[:, :, 3] - s.image[:, :, 3]).max() <= 1 / 508 + 1e-6
    assert abs(out.image[0, 0, 4] - 0.7) <= 1 / 508 + 1e-6
    assert np.isnan(out.image[:, :, 4]).sum() == 64 * 33 - 1
    assert np.isnan(out.world[2]).all()
    ok = np.isfinite(s.world)
    assert np.abs(out.world[ok] - s.world[ok]).max() <= 0.0005 + 1e-6   # half a millimetre
    # out of range: clipped to the range ends, never wrapped round
    far = make_series(1)
    far.image[0, 0, :3] = (7.0, -5.0, 20.0)
    far.world[0, 0] = (40.0, -40.0, 0.0)
    back = decode_chunk(far.encode())
    assert back.image[0, 0, 0] == pytest.approx(5.0, abs=1e-4)
    assert back.image[0, 0, 1] == pytest.approx(-4.0, abs=1e-4)
    assert back.image[0, 0, 2] == pytest.approx(16.0, abs=1e-3)
    assert back.world[0, 0, 0] == pytest.approx(32.767) and back.world[0, 0, 1] == \
        pytest.approx(-32.767)


def test_old_version_1_chunks_stay_readable_next_to_version_2() -> None:
    s = make_series(5)
    v1, v2 = decode_chunk(s.encode(version=1)), decode_chunk(s.encode(version=2))
    np.testing.assert_allclose(v1.image[:, :, :2], v2.image[:, :, :2], atol=7e-5)
    np.testing.assert_allclose(v1.world, v2.world, atol=5e-4 + 1e-6)
    with pytest.raises(ValueError, match="version 7"):
        s.encode(version=7)


def test_size_budget_is_under_one_kilobyte_per_frame() -> None:
    assert BYTES_PER_FRAME == 474
    for n in (1, 30, 60):
        blob = make_series(n).encode()
        assert len(blob) == HEADER_SIZE + n * BYTES_PER_FRAME
        assert len(blob) / n <= 1024


def test_empty_chunk_round_trips() -> None:
    blob = PoseSeries.empty().encode()
    assert len(blob) == HEADER_SIZE
    assert len(decode_chunk(blob)) == 0


def test_encode_chunk_takes_plain_arrays_and_casts() -> None:
    s = make_series(4)
    blob = encode_chunk(s.frames.astype(np.int64), list(s.times), s.image.astype(np.float64),
                        s.world.astype(np.float64))
    assert blob == s.encode()


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b[:-1], id="truncated-body"),
        pytest.param(lambda b: b + b"\0", id="trailing-byte"),
        pytest.param(lambda b: b[:10], id="truncated-header"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b"XXXX" + b[4:], id="bad-magic"),
        pytest.param(lambda b: b[:100] + bytes([b[100] ^ 0x40]) + b[101:], id="bit-flip"),
        pytest.param(lambda b: b[:8] + struct.pack("<I", 3) + b[12:], id="wrong-count"),
    ],
)
def test_corrupt_blob_raises_storage_error(mutate) -> None:
    blob = make_series(5).encode()
    with pytest.raises(StorageError):
        decode_chunk(mutate(bytearray(blob)))


def test_unknown_version_is_named_in_the_error() -> None:
    blob = bytearray(make_series(2).encode())
    blob[4] = 99
    with pytest.raises(StorageError, match="version 99"):
        decode_chunk(bytes(blob))


def test_bad_shapes_and_decreasing_times_are_rejected() -> None:
    s = make_series(3)
    with pytest.raises(ValueError, match="image"):
        encode_chunk(s.frames, s.times, s.image[:, :, :3], s.world)
    with pytest.raises(ValueError, match="times"):
        encode_chunk(s.frames, s.times[:2], s.image, s.world)
    with pytest.raises(ValueError, match="non-decreasing"):
        encode_chunk(s.frames, s.times[::-1], s.image, s.world)
    with pytest.raises(ValueError, match="int32"):
        encode_chunk(s.frames.astype(np.int64) + 2**31, s.times, s.image, s.world)


def test_slice_time_is_half_open_and_concat_joins() -> None:
    a, b = make_series(30), make_series(30, t0=1.0, frame0=30, seed=1)
    whole = PoseSeries.concat([a, PoseSeries.empty(), b])
    assert len(whole) == 60
    np.testing.assert_array_equal(whole.frames, np.arange(60))

    part = whole.slice_time(0.5, 1.5)  # frames 15..44: t = 0.5 included, 1.5 excluded
    assert part.frames[0] == 15 and part.frames[-1] == 44
    np.testing.assert_array_equal(part.image, whole.image[15:45])
    # consecutive windows never share a frame
    left, right = whole.slice_time(None, 1.0), whole.slice_time(1.0, None)
    assert len(left) + len(right) == 60 and left.frames[-1] + 1 == right.frames[0]
    assert len(whole.slice_time(5.0, 6.0)) == 0
    assert len(whole.slice_time(1.0, 0.5)) == 0
    assert len(PoseSeries.concat([])) == 0


def test_from_poses_skips_frames_without_a_person() -> None:
    rng = np.random.default_rng(3)
    img = rng.random((33, 5)).astype(np.float32)
    wld = rng.random((33, 3)).astype(np.float32)
    poses = [
        Pose(100, 50.0, 404, 720, img, wld),
        Pose(101, 50.033, 404, 720, None, None),
        Pose(102, 50.066, 404, 720, img, wld),
    ]
    s = PoseSeries.from_poses(poses, time_origin=50.0, frame_origin=100)
    assert s.frames.tolist() == [0, 2]
    np.testing.assert_allclose(s.times, [0.0, 0.066])
    np.testing.assert_array_equal(s.image[1], img)
