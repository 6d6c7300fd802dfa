"""Request and response bodies of the HTTP API (pydantic; unknown keys rejected)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ErrorBody",
    "PoseWindow",
    "SaveLastRequest",
    "SessionList",
    "SessionOut",
    "SessionPatch",
    "StartRequest",
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartRequest(_In):
    """``POST /api/recordings/start``: every field optional."""

    name: str | None = Field(None, max_length=200)
    description: str = Field("", max_length=5000)
    climber: str = Field("", max_length=200)
    pre_roll_s: float | None = Field(
        None, ge=0, allow_inf_nan=False,
        description="Seconds before now to include (default: recording.pre_roll_s); clamped "
        "to what the buffer holds; the new session's pre_roll_s says what was included")


class SaveLastRequest(_In):
    """``POST /api/recordings/save-last``: save the last N seconds as a session."""

    seconds: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="Default: recording.pre_roll_s. More than recording.buffer_s: 422; the "
        "saved session's duration_s is what the buffer held")
    name: str | None = Field(None, max_length=200)
    description: str = Field("", max_length=5000)
    climber: str = Field("", max_length=200)


class SessionPatch(_In):
    """``PATCH /api/sessions/{id}``: fields to change."""

    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=5000)
    climber: str | None = Field(None, max_length=200)
    pinned: bool | None = Field(None, description="True: never deleted automatically")


class SessionOut(BaseModel):
    """A session as the API returns it (times in seconds, created_at in Unix seconds)."""

    id: int
    name: str
    description: str
    climber: str
    created_at: float
    duration_s: float
    frame_count: int
    frames_with_pose: int
    frames_analyzed: int = Field(0, description="frames pose ran on (a person found or not)")
    pose_status: Literal["live", "backfilling", "complete"] = Field(
        "complete", description="'live' while recording (live pose may skip frames), "
        "'backfilling' while the recorded video is analysed for them, 'complete' after")
    status: Literal["recording", "completed", "processing", "interrupted", "failed"]
    error: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    pre_roll_s: float | None = None
    source: str | None = None
    video_url: str | None = None
    poses_url: str
    pinned: bool = False
    #: random version-4 UUID (the session's key in the archive bucket)
    uuid: str | None = None
    #: Unix time (s) the archive confirmed the session's last object; null: not archived
    archived_at: float | None = None
    #: ``[{"index", "start_s", "end_s" | None, "duration_s" | None, "end_reason",
    #: "metrics"}]`` (seconds from the session start; the list carries headline metrics only,
    #: the detail and ``/attempts`` every metric)
    attempts: list[dict[str, Any]] = []


class SessionList(BaseModel):
    """A page of sessions, newest first."""

    items: list[SessionOut]
    total: int
    limit: int
    offset: int


class PoseWindow(BaseModel):
    """Pose rows of a session between ``start`` and ``end`` seconds (lazy loading).

    ``image[i]`` is 33 × [x, y, z, visibility, presence] (x, y normalised to the frame);
    ``world[i]`` is 33 × [x, y, z] in metres, hip-centred; ``t[i]`` seconds from the
    session start; ``frames[i]`` the session frame index.
    """

    session_id: int
    start: float
    end: float
    frames: list[int]
    t: list[float]
    image: list[list[list[float | None]]]
    world: list[list[list[float | None]]]


class ErrorBody(BaseModel):
    """Every 4xx/5xx response body."""

    error: str
    message: str
    details: Any = None
