"""The restart rules of `chainyard up`'s supervisor (`Stack.supervise` in cli/stack.py).

A child that exits is started again after a delay that doubles with each exit in a row (0.5 s, 1 s, 2 s, ... up
to 30 s) and starts over once the child has stayed up a while; a child that exits too often in a short window
(5 times within 60 s) is given up on: the stack stops and `up` exits non-zero, as systemd's StartLimitBurst or a
CrashLoopBackOff would tell an operator. This module only keeps the books, on a monotonic clock; the Stack reaps,
reports and restarts.
"""

from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class RestartPolicy:
    """When a dead child is started again, and when the supervisor stops trying."""

    first_delay: float = 0.5
    """Seconds before the first restart; each further exit in a row doubles it."""
    max_delay: float = 30.0
    """The doubling stops here."""
    stable_seconds: float = 30.0
    """A child that ran this long before it exited is restarted after `first_delay` again."""
    max_exits: int = 5
    """This many exits of one child within `window_seconds` and the supervisor gives up."""
    window_seconds: float = 60.0
    """The window `max_exits` is counted in."""


class CrashLoopError(RuntimeError):
    """A child exited `max_exits` times within the window: the stack is stopped and `up` exits non-zero."""


@dataclass
class Restarts:
    """One child's exits under a policy: how long to wait before the next start, or that it is time to give up."""

    policy: RestartPolicy
    in_a_row: int = 0
    """Exits since the child last stayed up `stable_seconds`."""
    exits: deque[float] = field(default_factory=deque)
    """Times of the exits within the window."""

    def exited(self, *, at: float, uptime: float) -> float | None:
        """Seconds to wait before starting again a child that exited at `at` after `uptime` s; None: give up."""
        policy = self.policy
        if uptime >= policy.stable_seconds:
            self.in_a_row = 0
        self.exits.append(at)
        while self.exits[0] <= at - policy.window_seconds:
            self.exits.popleft()
        if len(self.exits) >= policy.max_exits:
            return None
        delay = min(policy.first_delay * 2.0**self.in_a_row, policy.max_delay)
        self.in_a_row += 1
        return delay


def describe_exit(returncode: int) -> str:
    """'exited with code 1' or 'exited with signal 9 (SIGKILL)', from a Popen returncode."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = f" ({signal.Signals(-returncode).name})"
    except ValueError:
        name = ""
    return f"exited with signal {-returncode}{name}"
