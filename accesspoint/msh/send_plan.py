"""How many send workers each partner gets now: a pure function of the backlog, the sends under way and the limits.

The send pool (``sending.SendPool``) asks this only when workers are scarce (a partner has due messages and no
worker may start); otherwise it simply starts a worker for a partner whose backlog has no idle one, up to the
partner's maximum and the global one. The plan is max-min fair:

1. every partner with a backlog gets one worker, the one waiting longest first (no partner starves while the
   budget allows one each; beyond that, the oldest waiting go first, so every partner's turn comes);
2. then each partner's configured minimum (idle ones too: an idle worker waits on an event, it never polls);
3. then what is left goes one at a time to the partner with the fewest, so one slow partner with a deep backlog
   holds no more than its fair share while others have due messages.

No partner gets more than it can use (sends under way + backlog, at least its minimum) or more than its maximum,
and the plan never exceeds ``total`` (``send.workers``). A partner planned below the workers it runs now loses
them as their sends end: sends under way are never cut.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """A partner's concurrency: ``minimum`` workers kept even when idle, ``maximum`` sends at once."""

    minimum: int
    maximum: int

    def __post_init__(self) -> None:
        if not 0 <= self.minimum <= self.maximum or self.maximum < 1:
            raise ValueError(f"limits need 0 <= minimum <= maximum and maximum >= 1: {self.minimum}, {self.maximum}")


@dataclass(frozen=True, slots=True)
class Load:
    """One partner as the pool sees it: due messages waiting for a worker, sends under way, since when it waits."""

    backlog: int
    busy: int
    limits: Limits
    # When its backlog last began to wait unserved, on any increasing scale (clock seconds, or the pool's turns:
    # a worker taking one of its messages starts the rest's wait anew, so partners take turns).
    waiting_since: float | None = None

    @property
    def usable(self) -> int:
        """The workers this partner could use now: its sends and its backlog, at least its minimum, at most its
        maximum."""
        return min(self.limits.maximum, max(self.limits.minimum, self.busy + self.backlog))


def plan(loads: Mapping[str, Load], total: int) -> dict[str, int]:
    """Workers per partner (every key of ``loads``), summing to at most ``total``; see the module for the order."""
    planned = dict.fromkeys(loads, 0)
    budget = total
    # Oldest waiting first; partners not waiting after those; the key breaks ties so the plan is deterministic.
    order = sorted(loads, key=lambda key: (loads[key].waiting_since is None, loads[key].waiting_since or 0.0, key))
    for key in order:
        if budget == 0:
            return planned
        if loads[key].backlog > 0 and loads[key].usable > 0:
            planned[key], budget = 1, budget - 1
    for key in order:
        floor = min(loads[key].limits.minimum, loads[key].usable)
        given = min(max(floor - planned[key], 0), budget)
        planned[key], budget = planned[key] + given, budget - given
    rank = {key: index for index, key in enumerate(order)}
    fewest = [(planned[key], rank[key], key) for key in order if planned[key] < loads[key].usable]
    heapq.heapify(fewest)
    while budget > 0 and fewest:
        count, position, key = heapq.heappop(fewest)
        planned[key], budget = count + 1, budget - 1
        if count + 1 < loads[key].usable:
            heapq.heappush(fewest, (count + 1, position, key))
    return planned
