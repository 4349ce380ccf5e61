from __future__ import annotations

from img2img_bridge.live import LiveScheduler, LiveState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scheduler(debounce: float = 0.3) -> tuple[LiveScheduler, Clock]:
    clock = Clock()
    return LiveScheduler(debounce, clock), clock


def test_off_until_started_and_sends_the_first_state_at_once() -> None:
    live, _ = scheduler()
    assert live.state is LiveState.OFF
    assert not live.observe("a")
    live.start()
    assert live.observe("a")
    live.sent("job1", "a")
    assert live.state is LiveState.RUNNING


def test_edits_are_debounced_until_the_canvas_is_still() -> None:
    live, clock = scheduler()
    live.start()
    assert live.observe("a")
    live.sent("j1", "a")
    live.finished("j1")
    for key in ("b", "c", "d"):  # three quick strokes
        clock.now += 0.1
        assert not live.observe(key)
    assert live.state is LiveState.SETTLING
    clock.now += 0.29
    assert not live.observe("d")
    clock.now += 0.02
    assert live.observe("d")


def test_one_job_in_flight_and_the_newest_state_waits() -> None:
    live, clock = scheduler()
    live.start()
    live.observe("a")
    live.sent("j1", "a")
    sent = ["a"]
    for key in ("b", "c", "d", "e"):
        clock.now += 1.0  # each edit settles, but a job is still running
        assert not live.observe(key)
    assert live.in_flight == "j1"
    clock.now += 1.0
    assert not live.observe("e")
    assert live.finished("j1")
    assert live.observe("e")  # the newest state, not b, c or d
    live.sent("j2", "e")
    sent.append("e")
    assert live.finished("j2")
    clock.now += 5
    assert not live.observe("e")  # rendered already
    assert sent == ["a", "e"]
    assert live.state is LiveState.IDLE


def test_returning_to_the_rendered_state_sends_nothing() -> None:
    live, clock = scheduler()
    live.start()
    live.observe("a")
    live.sent("j1", "a")
    clock.now += 1
    live.observe("b")
    clock.now += 1
    live.observe("a")
    live.finished("j1")
    clock.now += 1
    assert not live.observe("a")


def test_a_failed_job_is_not_retried_for_the_same_state() -> None:
    live, clock = scheduler()
    live.start()
    live.observe("a")
    live.sent("j1", "a")
    live.finished("j1")
    clock.now += 10
    assert not live.observe("a")


def test_stop_returns_the_job_to_cancel_and_ignores_late_ends() -> None:
    live, _ = scheduler()
    live.start()
    live.observe("a")
    live.sent("j1", "a")
    assert live.stop() == "j1"
    assert live.state is LiveState.OFF
    assert not live.finished("j1")
    assert not live.observe("b")
    assert live.stop() is None


def test_unknown_jobs_do_not_free_the_slot() -> None:
    live, _ = scheduler()
    live.start()
    live.observe("a")
    live.sent("j1", "a")
    assert not live.finished("other")
    assert live.in_flight == "j1"


def test_invalidate_renders_the_same_state_again_after_the_debounce() -> None:
    live, clock = scheduler()
    live.start()
    live.observe("a")
    live.sent("j1", "a")
    live.finished("j1")
    live.invalidate()
    assert not live.observe("a")
    clock.now += 0.3
    assert live.observe("a")
