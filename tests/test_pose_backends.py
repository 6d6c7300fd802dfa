"""Both pose backends on the same real frames: same detections, landmarks within tolerance.

Here (CPython 3.11, mediapipe 0.10.18) both run in one environment: ``solutions`` is the legacy
graph and ``tasks`` is 0.10.18's own Tasks API ``PoseLandmarker`` with the bundle written by
``climbd.pose.bundle`` — the same bundle and code path that run under mediapipe 1.x on
CPython 3.13 (tests/test_install_trixie.py checks that one inside a Debian 13 root).

Tolerances (measured with bench/bench_pose.py, docs/POSE_BACKENDS.md): the two graphs pick
slightly different regions of interest while acquiring the climber (first ~15 frames: up to
tens of pixels on the extremities), then track within ~1-2 px; so the test bounds the median
over all landmarks and frames, and the mean after acquisition.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from climbd.config import PoseConfig
from climbd.errors import PoseError
from climbd.ingest import decode_rgb_frames
from climbd.pose import PoseEstimator, backends, bundle
from tests.conftest import REPO, SHORT

pytestmark = pytest.mark.media

#: px; see the module docstring.
MEDIAN_PX = 3.0
MEAN_AFTER_ACQUISITION_PX = 4.0
ACQUISITION_FRAMES = 15


@pytest.fixture(scope="module")
def task_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / bundle.TASK_FILE_NAME
    out.write_bytes(bundle.build_task())
    return out


def _run(est: PoseEstimator, clip: Path) -> tuple[np.ndarray, list]:  # type: ignore[type-arg]
    xy, poses = [], []
    for i, t, rgb in decode_rgb_frames(clip):
        pose = est.process(rgb, i, t)
        poses.append(pose)
        h, w = rgb.shape[:2]
        xy.append(pose.image[:, :2] * (w, h) if pose.image is not None
                  else np.full((33, 2), np.nan, np.float32))
    return np.array(xy), poses


def test_tasks_backend_matches_solutions_on_a_clip(
    task_file: Path, monkeypatch: pytest.MonkeyPatch, media: Path
) -> None:
    monkeypatch.setenv(bundle.TASK_FILE_ENV, str(task_file))
    with PoseEstimator(backend="solutions") as old:
        assert old.backend == "solutions"
        ref, _ = _run(old, SHORT)
    with PoseEstimator(PoseConfig(backend="tasks")) as new:
        assert new.backend == "tasks"
        xy, poses = _run(new, SHORT)
    found_ref = ~np.isnan(ref).any(axis=(1, 2))
    found = ~np.isnan(xy).any(axis=(1, 2))
    assert found_ref.all(), "the clip has a climber on every frame"
    assert (found[found_ref]).all(), "tasks misses frames the solutions backend finds"
    d = np.linalg.norm(ref - xy, axis=2)
    assert np.median(d) <= MEDIAN_PX, np.median(d)
    assert d[ACQUISITION_FRAMES:].mean() <= MEAN_AFTER_ACQUISITION_PX, d[15:].mean()
    # Tasks fills everything the Pose contract promises, presence included.
    p = poses[-1]
    assert p.image is not None and p.world is not None
    assert p.image.shape == (33, 5) and p.world.shape == (33, 3)
    assert np.isfinite(p.image).all() and np.isfinite(p.world).all()
    assert ((p.image[:, 3:] >= 0) & (p.image[:, 3:] <= 1)).all()
    # world landmarks are metres around the hip midpoint: hips ~0, body < 2.5 m across
    assert np.abs(p.world[23:25].mean(axis=0)).max() < 0.1
    assert np.ptp(p.world, axis=0).max() < 2.5


def test_bundle_is_deterministic_and_holds_the_metadata(task_file: Path) -> None:
    assert bundle.build_task() == task_file.read_bytes()
    with zipfile.ZipFile(task_file) as z:
        names = sorted(z.namelist())
        assert names == ["pose_detector.tflite", "pose_landmarks_detector.tflite"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        for name in names:
            assert b"TFLITE_METADATA" in z.read(name)


def test_bundle_rejects_other_model_files(tmp_path: Path) -> None:
    fake = tmp_path / "mediapipe-0.10.18-cp311-none-any.whl"
    with zipfile.ZipFile(fake, "w") as z:
        for name in bundle.SOURCE_SHA256:
            z.writestr(name, b"not the model")
    with pytest.raises(PoseError, match="sha256"):
        bundle.model_files_from_wheel(fake)
    with pytest.raises(PoseError, match="no BlazePose model files"):
        bundle.model_files_from_wheel(tmp_path / "missing.whl")


def test_model_wheel_installs_a_findable_task_file(tmp_path: Path, task_file: Path) -> None:
    wheel = bundle.build_wheel(tmp_path / "dist", task_file.read_bytes(), "licence text")
    assert wheel.name == f"climbd_blazepose_full-{bundle.MODEL_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        record = z.read(f"climbd_blazepose_full-{bundle.MODEL_VERSION}.dist-info/RECORD")
        assert b"climbd_blazepose_full/pose_landmarker_full.task,sha256=" in record
        z.extractall(tmp_path / "site")
    r = subprocess.run([sys.executable, "-c",
                        "from climbd.pose import bundle; print(bundle.find_task_file())"],
                       env={"PYTHONPATH": f"{tmp_path / 'site'}:{REPO}"},
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    found = Path(r.stdout.strip())
    assert found.read_bytes() == task_file.read_bytes()


def test_auto_prefers_solutions_and_errors_say_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    why = backends.available()
    assert why["solutions"] == ""
    with PoseEstimator() as est:
        assert est.backend == "solutions"
    with pytest.raises(PoseError, match="unknown pose backend 'onnx'"):
        PoseEstimator(backend="onnx")
    monkeypatch.setenv(bundle.TASK_FILE_ENV, str(tmp_path / "nope.task"))
    with pytest.raises(PoseError, match="no such file"):
        PoseEstimator(backend="tasks")
    monkeypatch.delenv(bundle.TASK_FILE_ENV)
    if why["tasks"] == "":
        pytest.skip("the model package is installed in this environment")
    with pytest.raises(PoseError, match="climbd_blazepose_full"):
        PoseEstimator(backend="tasks")
