"""Pose backfill: pose on every recorded frame, from the recorded video, at idle priority.

Live pose takes the newest frame when a tracker is free, so on a slow box it skips frames
(the video never does). After a recording ends — and, after a restart, for sessions a crash
interrupted — :class:`climbd.backfill.service.PoseBackfill` runs one low-priority worker
process (:mod:`climbd.backfill.worker`: nice 19, ``SCHED_IDLE``, the last CPU, idle I/O,
like exports) that decodes the session's ``video.mp4`` and runs one BlazePose tracker over
every frame in order. Its chunks are staged and then replace the live rows in one
transaction (:mod:`climbd.storage.backfill` says why replace, not merge); progress is in
SQLite, so a restart resumes at the first frame without a committed chunk.

This package's ``__init__`` imports nothing: the worker lowers its priority before numpy,
PyAV or MediaPipe are imported.
"""
