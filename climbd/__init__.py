"""climbd: a climbing-wall replay appliance.

Capture → MediaPipe BlazePose → recording (pose in SQLite, video as fMP4) → live WebRTC and
replay for wall tablets. The curated public surface is re-exported here; everything else is
internal and may change.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
