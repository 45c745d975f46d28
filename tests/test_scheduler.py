"""The engine's scheduler on its own: fair turns across fronts, supersession, cancellation, departures."""

import threading

from engine.service.scheduler import Job, Scheduler


def make():
    dropped = []
    return Scheduler(lambda job, reason: dropped.append((job.client, job.id, reason))), dropped


def drain(s: Scheduler, n: int) -> list[tuple[int, int]]:
    out = []
    for _ in range(n):
        job = s.next()
        out.append((job.client, job.id))
        s.finished(job)
    return out


def test_fronts_take_turns():
    s, _ = make()
    for i in range(3):
        s.submit(Job(1, i, f"a{i}", {}))  # a busy window
    s.submit(Job(2, 0, "b", {}))  # another one asks once
    assert drain(s, 4) == [(1, 0), (2, 0), (1, 1), (1, 2)]


def test_a_newer_request_supersedes_the_queued_and_the_running_one():
    s, dropped = make()
    s.submit(Job(1, 0, "doc", {}))
    running = s.next()
    s.submit(Job(1, 1, "doc", {}))
    assert running.cancel.is_set()  # generating: stops at its next round
    s.submit(Job(2, 2, "doc", {}))  # the same file in another window: the queued one is dropped
    assert dropped == [(1, 1, "superseded")]
    s.finished(running)
    assert drain(s, 1) == [(2, 2)]
    assert s.pending() == 0


def test_cancel_and_a_front_that_leaves():
    s, dropped = make()
    s.submit(Job(1, 0, "x", {}))
    s.submit(Job(1, 1, "y", {}))
    s.submit(Job(2, 0, "z", {}))
    s.cancel(1, 1)
    assert dropped == [(1, 1, "cancelled")]
    running = s.next()  # client 1's x
    s.drop_client(1)
    assert running.cancel.is_set()
    s.finished(running)
    assert drain(s, 1) == [(2, 0)]  # the other front's request is untouched
    assert s.pending() == 0


def test_close_wakes_the_worker():
    s, _ = make()
    got = []
    worker = threading.Thread(target=lambda: got.append(s.next()))
    worker.start()
    s.close()
    worker.join(timeout=5)
    assert not worker.is_alive() and got == [None]
