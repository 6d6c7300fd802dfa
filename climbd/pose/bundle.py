"""BlazePose GHUM Full as a Tasks API ``.task`` bundle, in the ``climbd-blazepose-full`` wheel.

mediapipe 1.x (the only mediapipe with CPython 3.13 wheels) ships no pose model, and the
official ``pose_landmarker_full.task`` is a download, which the appliance and CI cannot do.
The Tasks API ``PoseLandmarker`` does accept the two BlazePose GHUM Full model files that ship
inside the mediapipe 0.10.18 wheel (Apache-2.0) once they carry the TFLite metadata it reads
to preprocess images (``NormalizationOptions``): this module writes that metadata with
mediapipe's own metadata writer (``mediapipe.tasks.python.metadata.metadata_writers``), packs
the two files as the bundle members the Tasks graph looks for, and wraps the bundle in a
small wheel (``climbd_blazepose_full``) so the model ships inside an installed package.

Normalisation (``(pixel - mean) / std`` on RGB uint8), as in the legacy graphs
(``pose_detection_cpu.pbtxt``: tensor range -1..1; ``pose_landmark_by_roi_cpu.pbtxt``:
0..1):

====================================  ==========================  =====  =====
bundle member                         source in mediapipe 0.10.18  mean   std
====================================  ==========================  =====  =====
``pose_detector.tflite``              ``pose_detection.tflite``    127.5  127.5
``pose_landmarks_detector.tflite``    ``pose_landmark_full.tflite``  0.0  255.0
====================================  ==========================  =====  =====

The writer in mediapipe 1.2.3 cannot run (its wheel lacks ``_pywrap_metadata_version``), so
the bundle is built where mediapipe 0.10.18 is installed (the development environment on
CPython <= 3.12), from that installation's model files or from a downloaded 0.10.18 wheel
(``--mediapipe-wheel``; any platform's: the model files are the same). The source files are
checked against :data:`SOURCE_SHA256`. The wheel is deterministic (fixed zip times), built
by ``image/build-wheelhouse.sh`` into every wheelhouse and installed by
``scripts/install.sh``.

Command line::

    python -m climbd.pose.bundle OUT_DIR                    # the wheel, from installed mediapipe
    python -m climbd.pose.bundle --task-only OUT_DIR        # just pose_landmarker_full.task
    python -m climbd.pose.bundle --mediapipe-wheel W OUT_DIR
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import io
import os
import sys
import zipfile
from pathlib import Path

from climbd.errors import PoseError

__all__ = ["DIST_NAME", "MODEL_VERSION", "SOURCE_SHA256", "TASK_FILE_NAME", "build_task",
           "build_wheel", "find_task_file", "model_files_from_mediapipe",
           "model_files_from_wheel"]

DIST_NAME = "climbd_blazepose_full"
#: The mediapipe release the model files come from; also the wheel's version.
MODEL_VERSION = "0.10.18"
TASK_FILE_NAME = "pose_landmarker_full.task"
#: Environment variable naming a ``.task`` file to use instead of the installed package's.
TASK_FILE_ENV = "CLIMBD_POSE_TASK_FILE"

_DETECTOR = "mediapipe/modules/pose_detection/pose_detection.tflite"
_LANDMARKS = "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
#: sha256 of the model files inside the mediapipe 0.10.18 wheels (the same on every platform).
SOURCE_SHA256 = {
    _DETECTOR: "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
    _LANDMARKS: "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
}
#: (member name, source, norm mean, norm std, output tensor names, description)
_MEMBERS = (
    ("pose_detector.tflite", _DETECTOR, 127.5, 127.5, ("regressors", "classificators"),
     "BlazePose person detector (224x224 RGB, -1..1): 2254 SSD anchors"),
    ("pose_landmarks_detector.tflite", _LANDMARKS, 0.0, 255.0,
     ("landmarks", "pose_flag", "segmentation", "heatmap", "world_landmarks"),
     "BlazePose GHUM Full landmarks (256x256 RGB, 0..1): 33 + 2 auxiliary landmarks"),
)
_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def _check(name: str, data: bytes) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256[name]:
        raise PoseError(f"{name}: sha256 {digest} is not the mediapipe {MODEL_VERSION} file")
    return data


def model_files_from_mediapipe() -> dict[str, bytes]:
    """The two model files of the installed mediapipe 0.10.18 (``{wheel path: bytes}``).

    Raises:
        PoseError: mediapipe 0.10.18's model files are not installed or differ.
    """
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise PoseError("mediapipe is not installed")
    site = Path(next(iter(spec.submodule_search_locations))).parent
    out = {}
    for name in SOURCE_SHA256:
        path = site / name
        if not path.is_file():
            raise PoseError(f"{path} is missing: the BlazePose Full files ship only in "
                            f"mediapipe {MODEL_VERSION} (use --mediapipe-wheel)")
        out[name] = _check(name, path.read_bytes())
    return out


def model_files_from_wheel(wheel: str | os.PathLike[str]) -> dict[str, bytes]:
    """The two model files read from a mediapipe 0.10.18 wheel file (any platform's).

    Raises:
        PoseError: not a readable wheel, files missing, or not the expected files.
    """
    try:
        with zipfile.ZipFile(wheel) as z:
            return {name: _check(name, z.read(name)) for name in SOURCE_SHA256}
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise PoseError(f"{wheel}: no BlazePose model files in it: {exc}") from exc


def _with_metadata(model: bytes, name: str, mean: float, std: float,
                   outputs: tuple[str, ...], description: str) -> bytes:
    try:
        from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer
    except ImportError as exc:
        raise PoseError("writing TFLite metadata needs mediapipe's metadata writers, which "
                        f"run with mediapipe {MODEL_VERSION} (CPython <= 3.12): {exc}") from exc
    writer = metadata_writer.MetadataWriter.create(bytearray(model))
    writer.add_general_info(name, description)
    writer.add_image_input(norm_mean=[mean], norm_std=[std])
    for output in outputs:
        writer.add_feature_output(name=output)
    content, _json = writer.populate()
    return bytes(content)


def _zip_bytes(members: list[tuple[str, bytes]], compress: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members:
            info = zipfile.ZipInfo(name, _ZIP_TIME)
            info.compress_type = compress
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    return buf.getvalue()


def build_task(files: dict[str, bytes] | None = None) -> bytes:
    """The ``pose_landmarker_full.task`` bundle (a zip, members stored uncompressed so the
    Tasks API can map them), from ``files`` (default: :func:`model_files_from_mediapipe`).

    Raises:
        PoseError: model files or the metadata writer unavailable.
    """
    files = files if files is not None else model_files_from_mediapipe()
    members = [(member, _with_metadata(files[src], member.removesuffix(".tflite"), mean, std,
                                       outputs, description))
               for member, src, mean, std, outputs, description in _MEMBERS]
    return _zip_bytes(members, zipfile.ZIP_STORED)


_INIT = f'''"""BlazePose GHUM Full (mediapipe {MODEL_VERSION} model files, Apache-2.0) as a
MediaPipe Tasks API bundle with TFLite metadata, built by climbd.pose.bundle."""

from pathlib import Path

#: The PoseLandmarker model bundle.
TASK_FILE = Path(__file__).with_name("{TASK_FILE_NAME}")
'''


def build_wheel(out_dir: str | os.PathLike[str], task: bytes | None = None,
                license_text: str | None = None) -> Path:
    """Write ``climbd_blazepose_full-<MODEL_VERSION>-py3-none-any.whl`` into ``out_dir``.

    Args:
        out_dir: directory (created).
        task: the bundle (default: :func:`build_task` from the installed mediapipe).
        license_text: Apache-2.0 text (default: the installed mediapipe's LICENSE, else a
            notice naming the licence).

    Returns:
        The wheel's path.
    """
    task = task if task is not None else build_task()
    if license_text is None:
        license_text = _mediapipe_license()
    dist_info = f"{DIST_NAME}-{MODEL_VERSION}.dist-info"
    metadata = (
        "Metadata-Version: 2.1\n"
        f"Name: {DIST_NAME.replace('_', '-')}\n"
        f"Version: {MODEL_VERSION}\n"
        "Summary: BlazePose GHUM Full as a MediaPipe Tasks bundle (for climbd)\n"
        "License: Apache-2.0\n"
    )
    files = [
        (f"{DIST_NAME}/__init__.py", _INIT.encode()),
        (f"{DIST_NAME}/{TASK_FILE_NAME}", task),
        (f"{DIST_NAME}/LICENSE", license_text.encode()),
        (f"{dist_info}/METADATA", metadata.encode()),
        (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: climbd.pose.bundle\n"
                               b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
        (f"{dist_info}/top_level.txt", f"{DIST_NAME}\n".encode()),
    ]
    record = "".join(
        f"{name},sha256="
        f"{base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
        f"{len(data)}\n" for name, data in files) + f"{dist_info}/RECORD,,\n"
    files.append((f"{dist_info}/RECORD", record.encode()))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / f"{DIST_NAME}-{MODEL_VERSION}-py3-none-any.whl"
    tmp = wheel.with_suffix(".tmp")
    tmp.write_bytes(_zip_bytes(files, zipfile.ZIP_DEFLATED))
    tmp.replace(wheel)
    return wheel


def _mediapipe_license() -> str:
    from importlib import metadata

    try:
        text = metadata.distribution("mediapipe").read_text("LICENSE")
    except metadata.PackageNotFoundError:
        text = None
    return text or ("The model files are from mediapipe " + MODEL_VERSION + ", licensed under "
                    "the Apache License, Version 2.0: https://www.apache.org/licenses/LICENSE-2.0\n")


def find_task_file() -> Path:
    """The installed bundle: ``$CLIMBD_POSE_TASK_FILE`` if set, else the
    ``climbd_blazepose_full`` package's file.

    Raises:
        PoseError: neither exists (the message says how to install it).
    """
    env = os.environ.get(TASK_FILE_ENV)
    if env:
        if not Path(env).is_file():
            raise PoseError(f"{TASK_FILE_ENV}={env}: no such file")
        return Path(env)
    spec = importlib.util.find_spec(DIST_NAME)
    if spec is not None and spec.origin:
        path = Path(spec.origin).with_name(TASK_FILE_NAME)
        if path.is_file():
            return path
    raise PoseError(f"the BlazePose model bundle is not installed (package {DIST_NAME}: "
                    "scripts/install.sh installs it from the wheelhouse; build it with "
                    "`python -m climbd.pose.bundle DIR` where mediapipe 0.10.18 is installed)")


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring). Exit 0 written, 1 failed."""
    p = argparse.ArgumentParser(prog="python -m climbd.pose.bundle", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--mediapipe-wheel", type=Path,
                   help="read the model files from this mediapipe 0.10.18 wheel")
    p.add_argument("--task-only", action="store_true", help=f"write only {TASK_FILE_NAME}")
    args = p.parse_args(argv)
    try:
        files = (model_files_from_wheel(args.mediapipe_wheel) if args.mediapipe_wheel
                 else model_files_from_mediapipe())
        task = build_task(files)
        if args.task_only:
            args.out_dir.mkdir(parents=True, exist_ok=True)
            out = args.out_dir / TASK_FILE_NAME
            out.write_bytes(task)
        else:
            out = build_wheel(args.out_dir, task)
    except (PoseError, OSError) as exc:
        print(f"climbd.pose.bundle: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
