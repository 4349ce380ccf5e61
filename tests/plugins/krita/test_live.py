from __future__ import annotations

import random

import pytest
from img2img_bridge.live import MAX_PAUSE_S, LiveScheduler, LiveState, LiveStats


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scheduler() -> tuple[LiveScheduler, Clock]:
    clock = Clock()
    return LiveScheduler(clock), clock


def frame(live: LiveScheduler, clock: Clock, job_id: str, key: str, took: float) -> None:
    """Send ``key`` now and have its result shown ``took`` seconds later."""
    assert live.observe(key)
    live.sent(job_id, key)
    clock.now += took
    assert live.finished(job_id, shown=True)


def test_off_until_started_and_sends_the_first_state_at_once() -> None:
    live, _ = scheduler()
    assert live.state is LiveState.OFF
    assert not live.observe("a")
    live.start()
    assert live.observe("a")
    live.sent("job1", "a")
    assert live.state is LiveState.RUNNING


def test_while_frames_are_fast_every_change_goes_out_as_soon_as_the_frame_is_back() -> None:
    live, clock = scheduler()
    live.start()
    frame(live, clock, "j0", "a", 0.02)
    assert live.pause == 0.0
    for i, key in enumerate("bcdefgh"):  # a stroke: a new state every 10 ms, no pause ever
        clock.now += 0.01
        frame(live, clock, f"j{i + 1}", key, 0.02)
    assert live.pause == 0.0 and live.state is LiveState.IDLE


def test_slow_frames_wait_for_a_pause_as_long_as_a_frame_and_the_wait_adapts() -> None:
    live, clock = scheduler()
    live.start()
    frame(live, clock, "j1", "a", 0.8)
    assert live.pause == pytest.approx(0.8)
    clock.now += 0.1
    assert not live.observe("b")  # a change while frames are slow waits for the canvas to be still
    assert live.state is LiveState.SETTLING
    clock.now += 0.79
    assert not live.observe("b")
    clock.now += 0.02
    assert live.observe("b")
    live.sent("j2", "b")
    clock.now += 5.0
    live.finished("j2", shown=True)
    assert live.pause == MAX_PAUSE_S  # never longer than this
    for i in range(12):  # the engine got fast again: the pause goes away
        live.observe(f"s{i}")
        clock.now += 1.0
        frame(live, clock, f"k{i}", f"s{i}", 0.01)
    assert live.pause == 0.0
    clock.now += 0.01
    assert live.observe("next")


def test_one_job_in_flight_and_the_newest_state_waits() -> None:
    live, clock = scheduler()
    live.start()
    live.observe("a")
    live.sent("j1", "a")
    for key in ("b", "c", "d", "e"):
        clock.now += 0.01
        assert not live.observe(key)  # a job is running
    assert live.in_flight == "j1"
    assert live.finished("j1", shown=True)
    assert live.observe("e")  # the newest state, not b, c or d
    live.sent("j2", "e")
    assert live.finished("j2", shown=True)
    clock.now += 5
    assert not live.observe("e")  # rendered already
    assert live.state is LiveState.IDLE


def test_returning_to_the_rendered_state_sends_nothing() -> None:
    live, clock = scheduler()
    live.start()
    live.observe("a")
    live.sent("j1", "a")
    clock.now += 0.01
    live.observe("b")
    clock.now += 0.01
    live.observe("a")
    live.finished("j1", shown=True)
    assert not live.observe("a")


def test_failed_and_cancelled_jobs_are_not_retried_and_do_not_count_as_frames() -> None:
    live, clock = scheduler()
    live.start()
    live.observe("a")
    live.sent("j1", "a")
    clock.now += 3.0
    live.finished("j1")
    clock.now += 10
    assert not live.observe("a")
    assert live.pause == 0.0 and live.stats().frame_s is None


def test_stop_returns_the_job_to_cancel_and_ignores_late_ends() -> None:
    live, _ = scheduler()
    live.start()
    live.observe("a")
    live.sent("j1", "a")
    assert live.stop() == "j1"
    assert live.state is LiveState.OFF
    assert not live.finished("j1", shown=True)
    assert not live.observe("b")
    assert live.stop() is None


def test_unknown_jobs_do_not_free_the_slot() -> None:
    live, _ = scheduler()
    live.start()
    live.observe("a")
    live.sent("j1", "a")
    assert not live.finished("other")
    assert live.in_flight == "j1"


def test_invalidate_renders_the_same_state_again() -> None:
    live, clock = scheduler()
    live.start()
    frame(live, clock, "j1", "a", 0.01)
    live.invalidate()
    assert live.observe("a")


def test_stats_count_frames_per_second_and_the_latency_from_first_seen_to_shown() -> None:
    live, clock = scheduler()
    assert live.stats() == LiveStats()
    assert LiveStats().describe() == ""
    live.start()
    live.observe("a")
    live.sent("j0", "a")
    clock.now += 0.01
    live.observe("b")  # seen while j0 runs
    clock.now += 0.04
    live.finished("j0", shown=True)
    live.observe("b")
    live.sent("j1", "b")
    clock.now += 0.05
    live.finished("j1", shown=True)
    stats = live.stats(capture_ms=2.0)
    assert stats.latency_s == pytest.approx(0.09)  # b waited 40 ms for j0, then took 50 ms
    assert stats.fps == pytest.approx(20.0)
    assert stats.describe() == "20.0 fps · latency 90 ms · capture 2.0 ms"
    for i in range(10):  # frames older than two seconds no longer count
        clock.now += 1.0
        frame(live, clock, f"k{i}", f"s{i}", 0.1)
    assert live.stats().fps == pytest.approx(1 / 1.1, rel=0.01)
    assert "waits" not in live.stats().describe()


def test_a_long_stroke_with_slow_frames_still_shows_a_frame_every_two_pauses() -> None:
    live, clock = scheduler()
    live.start()
    frame(live, clock, "j1", "a", 0.8)
    sent_at = []
    for i in range(100):  # a new state every 50 ms for five seconds: never still
        clock.now += 0.05
        if live.observe(f"s{i}"):
            sent_at.append(clock.now)
            live.sent(f"k{i}", f"s{i}")
        if live.in_flight is not None and clock.now - sent_at[-1] >= 0.8 - 1e-9:
            live.finished(live.in_flight, shown=True)
    assert sent_at[0] == pytest.approx(100.8 + 1.6, abs=0.051)  # two pauses after the first frame came back
    assert len(sent_at) == 2  # then a frame (0.8 s) and two more pauses


@pytest.mark.parametrize("seed", range(20))
def test_any_stroke_at_any_engine_speed_keeps_one_job_and_renders_the_last_state(seed: int) -> None:
    rng = random.Random(seed)
    live, clock = scheduler()
    live.start()
    in_flight: dict[str, float] = {}  # job -> when it ends
    sent: list[str] = []
    engine = rng.choice([0.001, 0.02, 0.2, 0.6, 2.0])
    edits = [f"s{i}" for i in range(rng.randint(5, 60))]
    now_key = edits[0]
    stroke_end = clock.now + len(edits) * 0.016
    n = 0
    while edits or in_flight or live.state is not LiveState.IDLE:
        clock.now += 0.005
        if edits and rng.random() < 0.4:
            now_key = edits.pop(0)
        for job, ends in list(in_flight.items()):
            if clock.now >= ends:
                del in_flight[job]
                assert live.finished(job, shown=True)
        if live.observe(now_key):
            assert not in_flight, "a second live job while one is in flight"
            n += 1
            live.sent(f"j{n}", now_key)
            in_flight[f"j{n}"] = clock.now + engine * rng.uniform(0.5, 1.5)
            sent.append(now_key)
        assert clock.now < stroke_end + 100
    assert sent[-1] == now_key
    assert len(sent) == len(set(sent))
