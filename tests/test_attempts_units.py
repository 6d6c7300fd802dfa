"""Attempt detection, metrics and centre of mass on synthetic poses with hand-known answers."""

from __future__ import annotations

import numpy as np
import pytest

from climbd.attempts import AttemptDetector, detect_attempts
from climbd.attempts.analysis import analyse_series
from climbd.attempts.com import DE_LEVA_SEGMENTS, centre_of_mass
from climbd.attempts.metrics import attempt_metrics, joint_angle, pauses
from tests.attempts_support import Scene, template, to_image

pytestmark = pytest.mark.unit

STAND = template()
CLIMB = template(arms_up=True, right_foot_up_m=0.3)


def detect(scene: Scene) -> list[tuple[float, float | None]]:
    found = detect_attempts(scene.times, scene.image, aspect=scene.aspect, start_s=0.0,
                            end_s=scene.t)
    return [(a.start_s, a.end_s) for a in found]


def lifted(s: Scene, seconds: float, to_m: float) -> Scene:
    """Stand 2 s, lift off at 2.0 s (0.4 m in 0.2 s), rise to ``to_m`` and stay there."""
    s.hold(2.0, STAND).move(0.2, CLIMB, 360, 360, 0.0, 0.4)
    return s.move(seconds - 0.2, CLIMB, 360, 360, 0.4, to_m)


def climb_scene(fps: float) -> Scene:
    """Stand 2 s, lift off at 2.0 s (the last sole 0.4 m up in 0.2 s), climb to 1.9 m, down
    again, the sole back on the floor at 12.0 s (from 0.3 m in 0.2 s), stand 3 s."""
    s = Scene(fps=fps)
    s.hold(2.0, STAND)
    s.move(0.2, CLIMB, 360, 360, 0.0, 0.4)
    s.move(4.8, CLIMB, 360, 420, 0.4, 1.9)
    s.move(4.8, CLIMB, 420, 360, 1.9, 0.3)
    s.move(0.2, CLIMB, 360, 360, 0.3, 0.0)
    s.hold(3.0, STAND)
    return s


@pytest.mark.parametrize("fps", [25.0, 30.0, 60.0])
def test_one_attempt_from_lift_off_to_landing_at_any_frame_rate(fps: float) -> None:
    (start, end), = detect(climb_scene(fps))
    # the decisions are margins of the body scale (a sole 0.25 m up, back within 0.17 m):
    # crossed ~0.1 s after lift-off and before touch-down in this scene
    assert start == pytest.approx(2.0, abs=0.15)
    assert end == pytest.approx(12.0, abs=0.15)


def test_live_events_arrive_within_about_a_second() -> None:
    s = climb_scene(30.0)
    det = AttemptDetector(s.aspect)
    events = []
    for t, im in zip(s.times, s.image, strict=True):
        events += det.update(t, im)
    assert [e.kind for e in events] == ["start", "end"]
    start, end = events
    assert start.t == pytest.approx(2.0, abs=0.15)
    assert 0 < start.detected_at - start.t <= 1.1
    assert end.t == pytest.approx(12.0, abs=0.15)
    assert 0 < end.detected_at - end.t <= 1.1
    assert det.current is None and end.attempt.end_reason == "landed"


def test_standing_and_walking_at_the_wall_is_not_an_attempt() -> None:
    s = Scene()
    s.hold(2.0, STAND)
    for k in range(8):  # walk along the wall: one foot up at a time, the other on the floor
        foot = template(left_foot_up_m=0.15) if k % 2 else template(right_foot_up_m=0.15)
        s.move(0.5, foot, 200 + 40 * k, 240 + 40 * k, 0.0, 0.0)
    s.hold(1.0, template(arms_up=True))  # reaching up to the holds, feet on the floor
    s.hold(2.0, STAND)
    assert detect(s) == []


def test_a_hop_or_one_step_up_is_too_short_to_be_an_attempt() -> None:
    s = Scene().hold(2.0, STAND).move(0.3, CLIMB, 360, 360, 0.0, 0.4)
    s.move(0.3, CLIMB, 360, 360, 0.4, 0.0).hold(2.0, STAND)
    assert detect(s) == []


def test_pose_lost_for_two_seconds_high_on_the_wall_is_not_an_end() -> None:
    s = lifted(Scene(), 3.0, 1.0)
    s.hold(1.9, None).move(2.8, CLIMB, 360, 360, 1.0, 0.3)
    s.move(0.2, CLIMB, 360, 360, 0.3, 0.0).hold(2.0, STAND)  # feet on the floor at 9.9 s
    (start, end), = detect(s)
    assert start == pytest.approx(2.0, abs=0.15) and end == pytest.approx(9.9, abs=0.3)


def test_pose_lost_for_long_ends_the_attempt_where_the_climber_was_last_seen() -> None:
    s = lifted(Scene(), 3.0, 1.0).hold(5.0, None)
    found = detect_attempts(s.times, s.image, aspect=s.aspect, end_s=s.t)
    assert len(found) == 1 and found[0].end_reason == "lost"
    assert found[0].end_s == pytest.approx(5.0 - 1 / 30, abs=0.01)


def test_on_the_wall_at_the_start_and_still_there_at_the_end() -> None:
    s = Scene().hold(4.0, CLIMB, lift_m=0.8)
    assert detect(s) == [(0.0, None)]


def test_nobody_in_view_gives_nothing() -> None:
    s = Scene().hold(5.0, None)
    assert detect(s) == []


def test_detector_rejects_a_bad_aspect() -> None:
    with pytest.raises(ValueError, match="aspect"):
        AttemptDetector(0.0)


# -- metrics -------------------------------------------------------------------------------

def metrics_of(s: Scene, start: float, end: float | None) -> dict:
    t, im, w = s.arrays()
    return attempt_metrics(t, im, w, width=s.width, height=s.height, start_s=start, end_s=end)


def test_a_pose_moved_one_metre_up_has_gained_one_metre() -> None:
    s = Scene().move(4.0, CLIMB, 360, 360, 0.5, 1.5)
    m = metrics_of(s, 0.0, None)
    assert m["height_gained_m"] == pytest.approx(1.0, abs=0.01)
    assert m["hip_path_m"] == pytest.approx(1.0, abs=0.01)
    assert m["economy"] == pytest.approx(1.0, abs=0.01)
    assert m["mean_hip_speed_mps"] == pytest.approx(0.25, abs=0.01)
    assert m["peak_hip_speed_mps"] == pytest.approx(0.25, abs=0.02)
    assert m["com"]["height_gained_m"] == pytest.approx(1.0, abs=0.01)
    assert m["metres_per_px"] == pytest.approx(1 / 400, rel=1e-3)
    assert m["pauses"] == []


def test_a_sideways_move_gains_no_height_and_has_zero_economy() -> None:
    s = Scene().move(2.0, CLIMB, 200, 600, 1.0, 1.0)  # 400 px = 1 m across
    m = metrics_of(s, 0.0, None)
    assert m["height_gained_m"] == pytest.approx(0.0, abs=0.005)
    assert m["hip_path_m"] == pytest.approx(1.0, abs=0.01)
    assert m["economy"] == pytest.approx(0.0, abs=0.01)


def test_a_still_pose_is_one_pause_as_long_as_the_stillness() -> None:
    s = Scene().move(2.0, CLIMB, 360, 360, 0.5, 1.0).hold(3.0, CLIMB, lift_m=1.0)
    s.move(2.0, CLIMB, 360, 360, 1.0, 1.5)
    m = metrics_of(s, 0.0, None)
    (p,) = m["pauses"]
    assert p["start_s"] == pytest.approx(2.0, abs=0.2)
    assert p["duration_s"] == pytest.approx(3.0, abs=0.3)
    assert m["time_on_wall_s"] == pytest.approx(7.0, abs=0.05)


def test_pauses_need_the_minimum_duration() -> None:
    t = np.arange(0, 3, 0.1)
    speed = np.where((t >= 1.0) & (t < 1.5), 0.0, 1.0)
    assert pauses(t, speed) == []
    speed = np.where((t >= 1.0) & (t <= 2.2), 0.0, 1.0)
    assert [p["duration_s"] for p in pauses(t, speed)] == [pytest.approx(1.2)]


def test_a_right_angle_is_90_degrees() -> None:
    assert joint_angle(np.array([1.0, 0, 0]), np.zeros(3), np.array([0, 0, 2.0])) == \
        pytest.approx(90.0)
    assert joint_angle(np.array([1.0, 0]), np.zeros(2), np.array([-3.0, 0])) == \
        pytest.approx(180.0)


def test_angle_series_of_the_template_are_known() -> None:
    bent = template()
    bent[13] = (0.2, -0.22, 0.0)            # upper arm straight down from the shoulder
    bent[15] = (0.2, -0.22, 0.28)           # forearm forwards: a right angle at the elbow
    s = Scene().hold(1.0, bent, lift_m=1.0)
    m = metrics_of(s, 0.0, None)
    assert set(m["angles"]["left_elbow"]) == {90.0}
    assert set(m["angles"]["left_knee"]) == {180.0}      # straight leg
    assert len(m["angles"]["t"]) == len(m["angles"]["right_hip"]) == 10


def test_de_leva_fractions_sum_to_one() -> None:
    assert sum(s[3] for s in DE_LEVA_SEGMENTS) == pytest.approx(1.0, abs=1e-9)


def test_com_of_a_symmetric_pose_is_on_the_mid_line() -> None:
    com = centre_of_mass(template(arms_up=True))
    assert com[0] == pytest.approx(0.0, abs=1e-9)
    # standing: between the hips and the shoulders' height? No: just above the hips
    com = centre_of_mass(STAND)
    assert -0.2 < com[1] < 0.05
    im = to_image(STAND, (300.0, 600.0), 400, 720, 1280)
    assert centre_of_mass(im[:, :2])[0] * 720 == pytest.approx(300.0, abs=1e-3)
    series = centre_of_mass(np.stack([STAND, STAND]))
    assert series.shape == (2, 3)


def test_com_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="33"):
        centre_of_mass(np.zeros((17, 3)))


def test_analyse_series_gives_attempts_with_metrics() -> None:
    s = climb_scene(30.0)
    t, im, w = s.arrays()
    (a,) = analyse_series(t, im, w, width=s.width, height=s.height, duration_s=s.t)
    assert a["start_s"] == pytest.approx(2.0, abs=0.15)
    assert a["duration_s"] == pytest.approx(10.0, abs=0.3)
    # the 0.5 s moving average rounds the apex of this up-and-down path by ~4 cm
    assert a["metrics"]["height_gained_m"] == pytest.approx(1.5, abs=0.05)
    with pytest.raises(ValueError):
        analyse_series(t, im, w, width=0, height=s.height)


def test_a_cut_in_the_video_starts_afresh() -> None:
    """A looped clip jumps from the climber standing back to the climber on the wall: the
    body teleports, the ground line learned before the cut is forgotten."""
    s = lifted(Scene(), 4.0, 0.6).move(0.3, CLIMB, 360, 360, 0.6, 0.0).hold(1.7, STAND)
    s.hold(4.0, CLIMB, hip_x_px=150, lift_m=0.05)  # cut: straight onto low holds elsewhere
    found = detect(s)
    assert found[0] == (pytest.approx(2.0, abs=0.15), pytest.approx(6.3, abs=0.15))
    assert found[1] == (pytest.approx(8.0, abs=0.05), None)


def sit_start() -> np.ndarray:
    """Crouched on low holds, hands up: hips 0.35 m above the soles, legs bent."""
    w = template(arms_up=True)
    for side, sx in ((0, 1), (1, -1)):
        w[25 + side] = (0.1 * sx, -0.1, 0.4)
        w[27 + side] = (0.1 * sx, 0.3, 0.4)
        w[29 + side] = (0.1 * sx, 0.35, 0.35)
        w[31 + side] = (0.12 * sx, 0.35, 0.5)
    return w


def test_a_sit_start_is_on_the_wall_even_with_the_feet_by_the_floor() -> None:
    s = Scene().hold(2.0, STAND).hold(1.0, None)      # stood there, stepped out of view ...
    s.hold(3.0, sit_start(), lift_m=0.05)             # ... sat down on the kicker holds
    (start, end), = detect(s)
    assert start == pytest.approx(3.0, abs=0.15) and end is None
    # crouching with the hands down (tying a shoe) is not an attempt
    s = Scene().hold(2.0, STAND).hold(1.0, None)
    s.hold(3.0, _hands_down(sit_start()), lift_m=0.05)
    assert detect(s) == []


def _hands_down(w: np.ndarray) -> np.ndarray:
    w = w.copy()
    w[13:23] = template()[13:23]
    return w
