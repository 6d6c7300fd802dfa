"""The GPIO debounce state machine on its own: no threads, no timers, no clock — every
time is an argument (ns), every timer the driver would arm is an ``Effects`` field."""

from __future__ import annotations

import pytest

from climbd.hardware.debounce import Debouncer

pytestmark = pytest.mark.unit

MS = 1_000_000  # ns


def _button() -> Debouncer:
    return Debouncer(debounce_ns=20 * MS, long_press_ns=1000 * MS, label="b")


def test_a_clean_short_press_fires_short_after_the_release_settles() -> None:
    b = _button()
    fx = b.edge(True, 0, 0)
    assert fx.settle_after_s == pytest.approx(0.02) and fx.long_after_s == pytest.approx(1.0)
    assert b.settle(True, 20 * MS).fire == [] and b.confirmed
    fx = b.edge(False, 300 * MS, 300 * MS)
    assert fx.fire == [] and fx.settle_after_s == pytest.approx(0.02)
    fx = b.settle(False, 320 * MS)
    assert fx.fire == ["short"] and fx.cancel_long and not b.pressed


def test_bounces_inside_the_window_are_ignored_and_counted() -> None:
    b = _button()
    b.edge(True, 0, 0)
    for t in (2, 4, 6):  # contact bounce: edges closer than 20 ms to the accepted one
        assert b.edge(t % 4 == 0, t * MS, t * MS).settle_after_s is None
    assert b.bounces == 3 and b.pressed


def test_a_press_shorter_than_the_window_is_a_glitch() -> None:
    b = _button()
    b.edge(True, 0, 0)
    fx = b.settle(False, 20 * MS)  # the line reads released when the window closes
    assert fx.fire == [] and fx.cancel_long and not b.pressed and b.bounces == 1


def test_a_long_press_fires_at_the_threshold_and_not_again_on_release() -> None:
    b = _button()
    b.edge(True, 0, 0)
    b.settle(True, 20 * MS)
    assert b.long_due(0).fire == ["long"]
    assert b.long_due(0).fire == []  # once
    b.edge(False, 1500 * MS, 1500 * MS)
    assert b.settle(False, 1520 * MS).fire == []


def test_a_release_read_late_is_classified_by_the_event_timestamps() -> None:
    b = _button()
    b.edge(True, 0, 0)
    b.settle(True, 20 * MS)
    # released after 400 ms, but the event is only handled 2 s later: still short
    b.edge(False, 400 * MS, 2400 * MS)
    assert b.long_due(0).fire == []  # a pending release wins over the threshold
    assert b.settle(False, 2420 * MS).fire == ["short"]


def test_a_lost_press_edge_is_made_up_when_the_line_reads_pressed() -> None:
    b = _button()
    b.edge(True, 0, 0)
    b.settle(True, 20 * MS)
    b.edge(False, 100 * MS, 100 * MS)
    fx = b.settle(True, 120 * MS)  # the release bounced back: still held
    assert fx.fire == [] and b.pressed and b.bounces == 1


def test_held_at_start_gives_no_press_until_released() -> None:
    b = _button()
    b.held_at_start(True)
    b.edge(False, 5000 * MS, 5000 * MS)
    assert b.settle(False, 5020 * MS).fire == [] and not b.pressed
    b.edge(True, 6000 * MS, 6000 * MS)
    b.settle(True, 6020 * MS)
    b.edge(False, 6100 * MS, 6100 * MS)
    assert b.settle(False, 6120 * MS).fire == ["short"]


def test_without_a_debounce_window_every_edge_is_confirmed_at_once() -> None:
    b = Debouncer(debounce_ns=0, long_press_ns=1000 * MS)
    assert b.edge(True, 0, 0).settle_after_s is None and b.confirmed
    assert b.edge(False, 10 * MS, 10 * MS).fire == ["short"]
