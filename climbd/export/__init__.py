"""Exports of a session: the video as recorded (stream copy), the video with the skeleton
burned in, and the pose data as CSV or JSON; run in a low-priority worker process.

- :mod:`climbd.export.clip`: :func:`export_clip` (stream copy, cut at keyframes).
- :mod:`climbd.export.overlay`: :func:`export_overlay` (decode, draw, H.264 via PyAV).
- :mod:`climbd.export.posedata`: :func:`write_csv`, :func:`write_json` and their readers.
- :mod:`climbd.export.jobs`: :class:`ExportManager` (queue, worker processes, progress).
"""
