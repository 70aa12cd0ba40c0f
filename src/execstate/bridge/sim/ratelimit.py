"""Shioaji server-side rate limits and the one-minute ban, on an injected clock.

Entry points: `RateGate(clock)`, `RateGate.check(group)`, `SlidingWindow`, `ban_error()`,
group names `ACCOUNTING`, `ORDER`, `LOGIN`, and `DEFAULT_LIMITS`.

Invariants (reference §1, limits page 2026-06-18):
- accounting (list_positions, list_profit_loss, list_profit_loss_detail, list_settlements, ...):
  25 calls per sliding 5 s; orders (place/update/cancel, update_status): 250 per 10 s;
  login: 1000 per day. A group with no limit (e.g. "free") is only counted.
- The call that exceeds a limit raises and starts a 60 s ban (`banned_until = now + 60`).
  During the ban every server call in every group raises the same error; by default a call
  during the ban does not extend it (`extend_ban_on_retry=True` models TROUBLESHOOTING.md's
  "retrying can extend the ban"). Rejected calls do not consume window budget.
- The error is the real `sj.ServerError` with "StatusCode: 503, Detail: 操作異常，請1分鐘後再重新登入"
  and `.status_code = 503`. (1.7.9 also has `sj.SystemMaintenance` "HTTP 503"; which class the
  real SDK raises for this reply is unverified, so catch `sj.ShioajiError` and match the text.)
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Callable

import shioaji as sj

BAN_MESSAGE = "操作異常，請1分鐘後再重新登入"
BAN_SECONDS = 60.0
ACCOUNTING = "accounting"
ORDER = "order"
LOGIN = "login"
DEFAULT_LIMITS: dict[str, tuple[int, float]] = {
    ACCOUNTING: (25, 5.0), ORDER: (250, 10.0), LOGIN: (1000, 86400.0)}


def ban_error() -> sj.ServerError:
    """The error a rate-limited or banned call raises (a fresh instance each time)."""
    err = sj.ServerError(f"StatusCode: 503, Detail: {BAN_MESSAGE}")
    err.status_code = 503
    return err


class SlidingWindow:
    """At most `limit` admissions in any half-open interval (now - window_s, now]."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._times: deque[float] = deque()

    def admit(self, now: float) -> bool:
        """Record a call at `now` if the window has room; False (and nothing recorded) if not."""
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True

    def __len__(self) -> int:
        return len(self._times)


class RateGate:
    """Per-group sliding windows plus the shared ban. Not thread-safe by itself; callers lock."""

    def __init__(self, clock: Callable[[], float], limits: dict[str, tuple[int, float]] | None = None,
                 ban_s: float = BAN_SECONDS, extend_ban_on_retry: bool = False) -> None:
        self._clock = clock
        self._windows = {g: SlidingWindow(n, w) for g, (n, w) in (limits or DEFAULT_LIMITS).items()}
        self.ban_s = ban_s
        self.extend_ban_on_retry = extend_ban_on_retry
        self.banned_until: float | None = None
        self.calls: Counter[str] = Counter()  # every attempted server call, by group
        self.rejected: Counter[str] = Counter()  # calls that raised the ban error, by group
        self.bans = 0  # bans started

    def banned(self, now: float | None = None) -> bool:
        """True while a ban is in force."""
        now = self._clock() if now is None else now
        return self.banned_until is not None and now < self.banned_until

    def check(self, group: str) -> None:
        """Admit one server call of `group` or raise `ban_error()`."""
        now = self._clock()
        self.calls[group] += 1
        if self.banned(now):
            self.rejected[group] += 1
            if self.extend_ban_on_retry:
                self.banned_until = now + self.ban_s
            raise ban_error()
        window = self._windows.get(group)
        if window is not None and not window.admit(now):
            self.rejected[group] += 1
            self.bans += 1
            self.banned_until = now + self.ban_s
            raise ban_error()

    def in_window(self, group: str) -> int:
        """Calls of `group` currently inside its window (as of the last check)."""
        window = self._windows.get(group)
        return len(window) if window is not None else 0
