"""Refusals are counted per (actor, action, kind) and written at most once a window, on a clock the test moves."""
from __future__ import annotations

from federation.control.refusals import OTHER, Refusals
from tests.waiting import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counter(window_s: float = 60.0, max_keys: int = 64) -> tuple[Refusals, Clock, list[tuple]]:
    written: list[tuple] = []
    clock = Clock()
    refusals = Refusals(lambda actor, action, subject, **detail: written.append((actor, action, subject, detail)),
                        clock, window_s=window_s, max_keys=max_keys)
    return refusals, clock, written


def test_the_first_refusal_is_written_at_once_and_the_rest_once_per_window_with_their_count():
    refusals, clock, written = counter()
    refusals.refuse("bob", "call.denied", "GetJob", "GetJob: another tenant's job", job="j1", reason="job of tenant a")
    assert written == [("bob", "call.denied", "GetJob", {"kind": "GetJob: another tenant's job", "count": 1,
                                                         "job": "j1", "reason": "job of tenant a"})]
    for i in range(999):
        clock.now += 0.01
        refusals.refuse("bob", "call.denied", "GetJob", "GetJob: another tenant's job", job=f"j{i}",
                        reason="job of tenant a")
    refusals.flush_due()
    assert len(written) == 1, "nothing more until the window ends"
    clock.now = 1060.0
    refusals.flush_due()
    (actor, action, subject, detail), = written[1:]
    assert (actor, action, subject) == ("bob", "call.denied", "GetJob")
    assert detail["count"] == 999 and detail["window_s"] == 60.0 and detail["reasons"] == ["job of tenant a"]
    assert 1000.0 < detail["first_at"] <= detail["last_at"] < 1010.0
    # Still busy: the next window counts too; a quiet window lets the next one through at once.
    refusals.refuse("bob", "call.denied", "GetJob", "GetJob: another tenant's job")
    assert len(written) == 2
    clock.now = 1120.0
    refusals.flush_due()
    assert written[-1][3]["count"] == 1
    clock.now = 1180.0
    refusals.flush_due()
    assert len(written) == 3, "a window with nothing counted writes nothing"
    refusals.refuse("bob", "call.denied", "GetJob", "GetJob: another tenant's job")
    assert len(written) == 4 and written[-1][3]["count"] == 1


def test_keys_are_apart_and_subjects_vary_within_a_key():
    refusals, clock, written = counter()
    refusals.refuse("eu-west", "attempt.stale", "job-1", "stale epoch", attempt=1)
    refusals.refuse("us-east", "attempt.stale", "job-1", "stale epoch", attempt=1)
    for i in range(2, 12):
        refusals.refuse("eu-west", "attempt.stale", f"job-{i}", "stale epoch", attempt=1)
    assert [(w[0], w[2]) for w in written] == [("eu-west", "job-1"), ("us-east", "job-1")]
    clock.now += 61
    refusals.refuse("us-east", "attempt.stale", "job-1", "stale epoch", attempt=1)   # the next record ends the window
    summary = written[2]
    assert (summary[0], summary[2], summary[3]["count"]) == ("eu-west", OTHER, 10)
    assert summary[3]["subjects"] == ["job-2", "job-3", "job-4", "job-5", "job-6"], "a sample, bounded"
    assert written[3][:3] == ("us-east", "attempt.stale", "job-1"), "us-east was quiet a window: written at once"


def test_keys_beyond_the_bound_are_folded_into_one_record_and_close_writes_what_is_pending():
    refusals, _, written = counter(max_keys=3)
    for i in range(50):
        refusals.refuse(f"user-{i}", "call.denied", "GetJob", "GetJob: permission denied", reason="r" * 500)
    assert [w[0] for w in written] == ["user-0", "user-1", "user-2"]
    refusals.close()
    (actor, action, subject, detail), = written[3:]
    assert (actor, action, subject, detail["count"]) == (OTHER, "call.denied", "GetJob", 47)
    assert detail["actors"] == ["user-3", "user-4", "user-5", "user-6", "user-7"]
    assert detail["reasons"] == ["r" * 200], "reasons are cut short"
    refusals.close()
    assert len(written) == 4, "nothing is written twice"


def test_a_clock_set_back_ends_the_window():
    refusals, clock, written = counter()
    refusals.refuse("a", "call.denied", "X", "X: permission denied")
    refusals.refuse("a", "call.denied", "X", "X: permission denied")
    clock.now -= 3600
    refusals.flush_due()
    assert [w[3]["count"] for w in written] == [1, 1]


def test_the_timer_writes_a_window_that_is_over():
    refusals, clock, written = counter(window_s=0.5)
    refusals.refuse("a", "call.denied", "X", "X: permission denied")
    refusals.refuse("a", "call.denied", "X", "X: permission denied")
    clock.now += 1
    refusals.start(every_s=0.01)
    try:
        wait_for(lambda: len(written) == 2, 5, "the timer to write the window")
    finally:
        refusals.close()
    assert written[-1][3]["count"] == 1 and len(written) == 2
