"""`poll_until`: the one wait loop, for everything that waits on something outside the process.

A readiness check, a Flink job reaching RUNNING, a savepoint completing, outputs arriving from a pipeline: each
calls a check until it has an answer, gives up at a deadline, and some also give up early when nothing moves
(stall detection) or report progress while they wait. Those loops were written out again at every wait; the
differences between them were only which of these they needed, so here they are parameters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


class PollTimeout(TimeoutError):
    """The deadline passed (`stalled` False) or nothing moved for the stall window (`stalled` True)."""

    def __init__(self, message: str, *, stalled: bool):
        super().__init__(message)
        self.stalled = stalled


def poll_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    interval: float,
    what: str = "the condition",
    progress: Callable[[], Hashable] | None = None,
    stall: float | None = None,
    stall_after_first_change: bool = False,
    report: Callable[[], object] | None = None,
    report_every: float = 5.0,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """Calls `check()` every `interval` seconds until it returns something other than None, and returns that.

    An exception from `check` ends the wait with it: that is how a check says "this will never happen" (a process
    died, a job failed). On giving up, raises PollTimeout: after `timeout` seconds, or, with `progress` and
    `stall`, once `progress()` has returned the same value for `stall` seconds (with `stall_after_first_change`,
    only once it has changed at least once, so a slow start is not taken for a stall). `report()` is called about
    every `report_every` seconds while waiting. `sleep` is injectable so tests can count the waits.
    """
    start = time.monotonic()
    deadline, next_report = start + timeout, start + report_every
    last_seen = progress() if progress is not None else None
    last_change, changed = start, False
    while True:
        result = check()
        if result is not None:
            return result
        now = time.monotonic()
        if progress is not None:
            seen = progress()
            if seen != last_seen:
                last_seen, last_change, changed = seen, now, True
            if stall is not None and (changed or not stall_after_first_change) and now - last_change > stall:
                raise PollTimeout(f"nothing moved for {stall:.0f} s waiting for {what}", stalled=True)
        if now >= deadline:
            raise PollTimeout(f"gave up after {timeout:.0f} s waiting for {what}", stalled=False)
        if report is not None and now >= next_report:
            report()
            next_report += report_every
        sleep(interval)
