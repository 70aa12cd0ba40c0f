"""Broker query gateway: every Shioaji query under the server's rate limits, with retries and bans.

Entry points: `BrokerGateway(client, settings, ...)` with `call(group, method, *args, deadline=None, **kwargs)`,
the query methods (`list_positions`, `list_profit_loss`, `list_profit_loss_detail`, `list_settlements`,
`update_status`, `order_deal_records`, `list_trades`), `map(calls)`, `stats()`, `close()`;
`SlidingWindowLimiter`, `BrokerCall`, `GatewayStats`, `is_ban_error`, `BrokerQueryError`,
`DeadlineExceeded`; groups `PORTFOLIO`, `ORDER`, `FREE` and `METHOD_GROUPS`.

Invariants:
- Per group (portfolio 25 per 5 s, order 250 per 10 s, from `RateLimitSettings`) no interval of
  `window_s + margin_s` holds more than `limit` calls, for any number of threads. The gateway
  holds a call's slot until the call returns and stamps it with the return time, so the broker's
  receipt time (somewhere in [admitted, returned]) can never be closer than a window to the
  next call that would go over, whatever the network latency. `free` calls (`list_trades`,
  a local cache) have no budget and ignore bans.
- A ban (`sj.ServerError` 503 / "操作異常") is global: once one thread sees it, no thread starts a
  budgeted call until `seen + ban_s + jitter`, because calls during a ban can extend it.
- Other broker errors (`sj.ShioajiError`, `TimeoutError`, `ConnectionError`) are retried with
  full-jitter exponential backoff, at most `max_attempts` calls in all (bans included), then
  `BrokerQueryError`. Argument errors (bad account, bad value) are raised at once.
- No call waits past its `deadline` (absolute, on the gateway's clock): `DeadlineExceeded` is
  raised as soon as the wait needed (budget, ban or backoff) is known to cross it.
- Call arguments (accounts carry `person_id`) never reach a log line or an error message.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import shioaji as sj

from execstate.config import RateLimitSettings
from execstate.telemetry.logging import get_logger

log = get_logger("execstate.reconcile.gateway")

PORTFOLIO, ORDER, FREE = "portfolio", "order", "free"
METHOD_GROUPS: Mapping[str, str] = MappingProxyType({  # [I] every portfolio query shares the 25 / 5 s bucket
    **dict.fromkeys(("list_positions", "list_profit_loss", "list_profit_loss_detail", "list_settlements", "settlements", "account_balance",
                     "margin", "list_position_detail", "list_profit_loss_summary", "trading_limits"), PORTFOLIO),
    **dict.fromkeys(("update_status", "order_deal_records"), ORDER), "list_trades": FREE})
BAN_TEXT = "操作異常"
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (sj.ShioajiError, TimeoutError, ConnectionError)
# caller mistakes: the same call fails the same way, so retrying only burns budget
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    sj.AccountNotProvideError, sj.AccountNotSignError, sj.ShioajiValueError, sj.ShioajiTypeError,
    sj.ShioajiPermissionError, sj.BadRequestError, sj.ValidationError, sj.CaError)


def _describe(exc: BaseException | None) -> str:
    """Error class and message (truncated); never call arguments."""
    if exc is None:
        return "none"
    return f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__


class BrokerQueryError(Exception):
    """A broker query failed for good: `method`, `attempts` made, `last_error` (None if no call)."""

    def __init__(self, method: str, attempts: int, last_error: BaseException | None, reason: str = "") -> None:
        self.method, self.attempts, self.last_error = method, attempts, last_error
        why = reason or "retries exhausted"
        super().__init__(f"{method}: {why} after {attempts} attempts (last error: {_describe(last_error)})")


class DeadlineExceeded(BrokerQueryError):
    """The wait needed before the next attempt would cross `deadline`; `ready_at` is when it could run."""

    def __init__(self, method: str, attempts: int, last_error: BaseException | None, deadline: float,
                 ready_at: float | None, waiting_for: str) -> None:
        self.deadline, self.ready_at, self.waiting_for = deadline, ready_at, waiting_for
        when = "unknown" if ready_at is None else f"{ready_at:.3f}"
        super().__init__(method, attempts, last_error,
                         f"deadline {deadline:.3f} would be crossed waiting for {waiting_for} (ready at {when})")


def is_ban_error(exc: BaseException) -> bool:
    """True for the broker's over-limit reply: 503 `sj.ServerError` or the 操作異常 message."""
    text = str(exc)
    return BAN_TEXT in text or (isinstance(exc, sj.ServerError) and (getattr(exc, "status_code", None) == 503 or "StatusCode: 503" in text))


class Slot:
    """One admitted call in a `SlidingWindowLimiter`. `start`: admission time; `end`: the time it
    counts from for expiry (None while held). `release()` stamps `end`; `cancel()` frees the slot."""

    __slots__ = ("_limiter", "start", "end", "waited_s")

    def __init__(self, limiter: SlidingWindowLimiter, start: float, end: float | None, waited_s: float) -> None:
        self._limiter, self.start, self.end, self.waited_s = limiter, start, end, waited_s

    def release(self) -> None:
        """The call returned: the slot now expires a window after this moment."""
        with self._limiter._cond:
            self.end = self._limiter._clock() if self.end is None else self.end
            self._limiter._cond.notify_all()

    def cancel(self) -> None:
        """The call was never made: give the slot back."""
        with self._limiter._cond:
            self._limiter._slots = [s for s in self._limiter._slots if s is not self]
            self._limiter._cond.notify_all()


class SlidingWindowLimiter:
    """At most `limit` calls start in any interval of `window_s + margin_s`. Thread-safe.

    `acquire()` blocks (on the injected `sleep`) until a slot is free; with `hold=True` the slot
    stays taken until `Slot.release()` and then counts from the release time (for calls whose
    receipt time is unknown). Waits for held slots use a condition woken by `release`/`cancel`,
    re-checked every `poll_s` real seconds.
    """

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, margin_s: float = 0.05, poll_s: float = 0.05) -> None:
        if limit <= 0 or window_s <= 0 or margin_s < 0:
            raise ValueError(f"limit={limit!r}, window_s={window_s!r}, margin_s={margin_s!r}: expected "
                             "limit > 0, window_s > 0, margin_s >= 0")
        self.limit, self.window_s, self.margin_s = limit, window_s, margin_s
        self._span = window_s + margin_s
        self._clock, self._sleep, self._poll_s = clock, sleep, poll_s
        self._cond = threading.Condition()
        self._slots: list[Slot] = []

    def _admit(self, now: float, hold: bool, waited: float) -> tuple[Slot | None, float | None]:
        """Under the lock: (slot, None) if admitted, else (None, time a slot frees or None if held)."""
        cutoff = now - self._span
        self._slots = [s for s in self._slots if s.end is None or s.end > cutoff]
        if len(self._slots) < self.limit:
            slot = Slot(self, now, None if hold else now, waited)
            self._slots.append(slot)
            return slot, None
        ends = sorted(s.end for s in self._slots if s.end is not None)
        need = len(self._slots) - self.limit + 1
        return None, (ends[need - 1] + self._span if len(ends) >= need else None)

    def try_acquire(self, hold: bool = False) -> Slot | None:
        """A slot now, or None without waiting."""
        with self._cond:
            return self._admit(self._clock(), hold, 0.0)[0]

    def acquire(self, deadline: float | None = None, hold: bool = False) -> Slot:
        """Block until a slot is free; `DeadlineExceeded` if that would be after `deadline`."""
        t0 = self._clock()
        while True:
            with self._cond:
                now = self._clock()
                slot, wake = self._admit(now, hold, now - t0)
                if slot is not None:
                    return slot
                if deadline is not None and ((wake is not None and wake > deadline) or now >= deadline):
                    raise DeadlineExceeded("acquire", 0, None, deadline, wake, "rate budget")
                if wake is None:  # every blocking slot is in flight: wait for a release
                    self._cond.wait(self._poll_s)
                    continue
            self._sleep(max(wake - now, 0.0))

    def used(self) -> int:
        """Calls that count against the current window (held ones included)."""
        with self._cond:
            cutoff = self._clock() - self._span
            return sum(1 for s in self._slots if s.end is None or s.end > cutoff)


class BrokerCall(NamedTuple):
    """One query for `BrokerGateway.map`; `group` defaults to `METHOD_GROUPS[method]`."""

    method: str
    args: tuple = ()
    kwargs: Mapping[str, Any] = MappingProxyType({})
    group: str | None = None


@dataclass(frozen=True)
class GatewayStats:
    """Telemetry snapshot of plain copies (msgspec-encodable). `calls`: broker calls per group, retries
    included; `retries`; `errors` (failed calls); `bans` (ban replies seen); seconds waited for budget,
    bans and backoff (summed over threads); `in_window`: calls counting against each current window."""

    calls: Mapping[str, int]
    retries: int
    errors: int
    bans: int
    budget_wait_s: float
    ban_wait_s: float
    backoff_s: float
    in_window: Mapping[str, int]
    ban_until: float | None  # clock time the last ban seen is assumed to end (None: never banned)


def _given(**kwargs: Any) -> dict[str, Any]:
    """Only the arguments the caller set, so the client's own defaults apply (e.g. `sj.Unit.Common`)."""
    return {k: v for k, v in kwargs.items() if v is not None and not (isinstance(v, str) and v == "")}


class BrokerGateway:
    """The one way to query the broker; see the module docstring. Safe to share between threads."""

    def __init__(self, client: Any, settings: RateLimitSettings | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, max_workers: int = 4, rng: random.Random | None = None,
                 max_attempts: int = 5, margin_s: float = 0.05, ban_s: float = 60.0, ban_jitter_s: float = 2.0) -> None:
        s = settings or RateLimitSettings()
        if max_attempts < 1:
            raise ValueError(f"max_attempts={max_attempts!r}: expected >= 1")
        self._client, self._clock, self._sleep = client, clock, sleep
        self._limiters = {
            PORTFOLIO: SlidingWindowLimiter(s.portfolio_queries_per_window, s.portfolio_window_ms / 1000, clock, sleep, margin_s),
            ORDER: SlidingWindowLimiter(s.order_calls_per_window, s.order_window_ms / 1000, clock, sleep, margin_s)}
        self._backoff_initial_s, self._backoff_max_s = s.backoff_initial_ms / 1000, s.backoff_max_ms / 1000
        self.max_attempts, self.max_workers = max_attempts, max_workers
        self.ban_s, self.ban_jitter_s = ban_s, ban_jitter_s
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._ban_until = float("-inf")
        self._pool: ThreadPoolExecutor | None = None
        self._calls = dict.fromkeys((PORTFOLIO, ORDER, FREE), 0)
        self._retries = self._errors = self._bans = 0
        self._budget_wait_s = self._ban_wait_s = self._backoff_s = 0.0

    # -- the one path to the broker -------------------------------------------------------------
    def call(self, group: str, method: str, /, *args: Any, deadline: float | None = None, **kwargs: Any) -> Any:
        """`client.<method>(*args, **kwargs)` within `group`'s budget, retried; see module docstring."""
        if group != FREE and group not in self._limiters:
            raise ValueError(f"group={group!r}: expected one of {sorted([*self._limiters, FREE])}")
        fn = getattr(self._client, method)
        attempts, last = 0, None
        while True:
            slot = self._admit(group, method, attempts, last, deadline)
            attempts += 1
            with self._lock:
                self._calls[group] += 1
            try:
                return fn(*args, **kwargs)
            except TRANSIENT_ERRORS as exc:
                last = exc
            finally:
                if slot is not None:
                    slot.release()
            self._failed(group, method, attempts, last, deadline)

    def _admit(self, group: str, method: str, attempts: int, last: BaseException | None,
               deadline: float | None) -> Slot | None:
        """Wait out any ban, then for budget; a ban seen meanwhile sends the slot back."""
        if group == FREE:
            return None
        limiter = self._limiters[group]
        while True:
            self._wait_ban(method, attempts, last, deadline)
            try:
                slot = limiter.acquire(deadline, hold=True)
            except DeadlineExceeded as exc:
                raise DeadlineExceeded(method, attempts, last, exc.deadline, exc.ready_at, f"{group} budget") from None
            with self._lock:
                self._budget_wait_s += slot.waited_s
                banned = self._clock() < self._ban_until
            if not banned:
                return slot
            slot.cancel()

    def _wait_ban(self, method: str, attempts: int, last: BaseException | None, deadline: float | None) -> None:
        """Sleep until the last ban seen is over (all threads share it)."""
        while True:
            with self._lock:
                until, now = self._ban_until, self._clock()
            if now >= until:
                return
            if deadline is not None and until > deadline:
                raise DeadlineExceeded(method, attempts, last, deadline, until, "broker ban to end")
            self._sleep(until - now)
            with self._lock:
                self._ban_wait_s += until - now

    def _failed(self, group: str, method: str, attempts: int, exc: BaseException, deadline: float | None) -> None:
        """Count and log one failed call; raise if it is final, else back off (bans wait in `_admit`)."""
        ban = is_ban_error(exc)
        with self._lock:
            self._errors += 1
            now = self._clock()
            if ban:
                self._bans += 1
                self._ban_until = max(self._ban_until, now + self.ban_s + self._rng.uniform(0, self.ban_jitter_s))
            ban_until = self._ban_until
        error = _describe(exc)
        if ban:
            log.warning("broker_ban", method=method, group=group, attempt=attempts, error=error, ban_until=round(ban_until, 3))
        if isinstance(exc, PERMANENT_ERRORS) and not ban:
            raise BrokerQueryError(method, attempts, exc, "not retryable") from exc
        if attempts >= self.max_attempts:
            log.error("broker_query_failed", method=method, group=group, attempts=attempts, error=error)
            raise BrokerQueryError(method, attempts, exc) from exc
        delay = 0.0
        if not ban:
            cap = min(self._backoff_max_s, self._backoff_initial_s * 2 ** (attempts - 1))
            with self._lock:
                delay = self._rng.uniform(0, cap)
            if deadline is not None and now + delay > deadline:
                raise DeadlineExceeded(method, attempts, exc, deadline, now + delay, "retry backoff") from exc
            log.info("broker_query_retry", method=method, group=group, attempt=attempts, error=error, backoff_s=round(delay, 3))
        with self._lock:
            self._retries += 1
            self._backoff_s += delay
        if delay:
            self._sleep(delay)

    # -- parallel ---------------------------------------------------------------------------------
    def map(self, calls: Iterable[BrokerCall | tuple], *, deadline: float | None = None, return_exceptions: bool = False) -> list[Any]:
        """Run independent calls on the thread pool (same shared budgets); results in input order.

        A failed call raises its error (the first in input order) after the running calls end and
        those not yet started are cancelled; `return_exceptions=True` puts errors in the list.
        Do not call from inside a gateway worker (the pool could starve).
        """
        batch = [c if isinstance(c, BrokerCall) else BrokerCall(*c) for c in calls]
        for c in batch:
            if c.group is None and c.method not in METHOD_GROUPS:
                raise ValueError(f"method={c.method!r}: unknown rate group; pass BrokerCall(group=...)")
        if not batch:
            return []
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="broker-gateway")
            pool = self._pool
        futures = [pool.submit(self.call, c.group or METHOD_GROUPS[c.method], c.method, *c.args, deadline=deadline, **c.kwargs)
                   for c in batch]
        out: list[Any] = []
        first: BaseException | None = None
        for i, fut in enumerate(futures):
            try:
                out.append(fut.result())
            except (CancelledError, Exception) as exc:  # noqa: BLE001 - handed back or re-raised below
                out.append(exc)
                if first is None and not return_exceptions and not isinstance(exc, CancelledError):
                    first = exc
                    for later in futures[i + 1:]:
                        later.cancel()
        if first is not None:
            raise first
        return out

    def close(self) -> None:
        """Stop the worker threads (waits for running calls)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BrokerGateway:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- telemetry --------------------------------------------------------------------------------
    def stats(self) -> GatewayStats:
        """Counters so far and current window use."""
        in_window = {g: lim.used() for g, lim in self._limiters.items()}
        with self._lock:
            return GatewayStats(dict(self._calls), self._retries, self._errors, self._bans,
                                self._budget_wait_s, self._ban_wait_s, self._backoff_s, in_window,
                                None if self._ban_until == float("-inf") else self._ban_until)

    # -- queries ----------------------------------------------------------------------------------
    def list_positions(self, account: Any = None, unit: Any = None, *, deadline: float | None = None) -> Any:
        """Open positions (portfolio budget)."""
        return self.call(PORTFOLIO, "list_positions", deadline=deadline, **_given(account=account, unit=unit))

    def list_profit_loss(self, account: Any = None, begin_date: str = "", end_date: str = "", unit: Any = None,
                         *, deadline: float | None = None) -> Any:
        """Realized profit-loss rows between the dates (portfolio budget)."""
        return self.call(PORTFOLIO, "list_profit_loss", deadline=deadline,
                         **_given(account=account, begin_date=begin_date, end_date=end_date, unit=unit))

    def list_profit_loss_detail(self, account: Any = None, detail_id: int = 0, unit: Any = None,
                                *, deadline: float | None = None) -> Any:
        """Matched lots of one profit-loss row (portfolio budget)."""
        return self.call(PORTFOLIO, "list_profit_loss_detail", deadline=deadline, detail_id=detail_id, **_given(account=account, unit=unit))

    def list_settlements(self, account: Any = None, *, deadline: float | None = None) -> Any:
        """Cash settlements (portfolio budget)."""
        return self.call(PORTFOLIO, "list_settlements", deadline=deadline, **_given(account=account))

    def update_status(self, account: Any = None, *, deadline: float | None = None) -> Any:
        """Refresh the client's trade cache from the server (order budget)."""
        return self.call(ORDER, "update_status", deadline=deadline, **_given(account=account))

    def order_deal_records(self, account: Any = None, *, deadline: float | None = None) -> Any:
        """Today's (OrderState, event) records (order budget)."""
        return self.call(ORDER, "order_deal_records", deadline=deadline, **_given(account=account))

    def list_trades(self) -> Any:
        """The client's local trade cache: no server call, no budget, not blocked by a ban."""
        return self.call(FREE, "list_trades")
