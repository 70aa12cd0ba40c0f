"""Process-level chaos, scenario `sigkill-restarts` (listed by `chaos.process.scenarios`): one
simulated day, SIGKILLed at seeded random points and restarted after each until it completes;
see `chaos.process` for the kill kinds and the verdicts.

Entry point: `_sigkill_restarts(fast, seed) -> ScenarioResult`.
Invariants: the first kill is always in delivery (a start-up time is then known); every `Day`
is closed in `finally` (processes killed by id, directories removed).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import msgspec

from chaos.harness import Check, ScenarioResult, check_books
from chaos.proc_verdicts import _alerts_check, _both, _failed, _orphan_facts, _play_out, _quantities, _rows_check, compare_books
from chaos.procs import Day

# --- scenario 1: SIGKILL at random points --------------------------------------------------

BOOT, STARTUP, RECONCILE, AFTER_START, DELIVERY = "boot", "start-up", "reconcile", "after-start", "delivery"
_STEPS = ("opening the recorder", "journal replay", "opening reconcile")


def _kill_plan(rng: random.Random, kills: int) -> list[str]:
    """Kinds of the kills in order: the first during delivery (a start-up time is then known),
    each other kind at least `kills // 6` times, the rest during delivery, shuffled."""
    each = max(1, kills // 6)
    rest = [BOOT, STARTUP, RECONCILE, AFTER_START] * each
    rest += [DELIVERY] * (kills - 1 - len(rest))
    rng.shuffle(rest)
    return [DELIVERY, *rest]


def _startup_step(st: dict, lines_at_spawn: int) -> str:
    """The start-up step a `status` taken in phase "starting" shows."""
    if st.get("recorder") is None:
        return _STEPS[0]
    if st["counts"]["raw_events"] < lines_at_spawn:
        return _STEPS[1]
    return _STEPS[2]


def _where(day: Day, lines_at_spawn: int) -> str:
    st = day.status(timeout_s=0.5)
    if st is None:
        return "boot: before the control endpoint"
    return f"start-up: {_startup_step(st, lines_at_spawn)}" if st.get("phase") == "starting" else "after start"


def _kill_at_boot(day: Day, rng: random.Random, lines_at_spawn: int) -> str:
    """At a random time since spawn, up to a start-up's length (imports, session, start-up)."""
    boot = sorted(day.boot_s)[len(day.boot_s) // 2] if day.boot_s else 1.2
    time.sleep(rng.uniform(0.0, boot))
    where = _where(day, lines_at_spawn)
    day.kill()
    return where


def _kill_in_startup(day: Day, rng: random.Random, lines_at_spawn: int) -> str:
    """Once start-up is seen at a random step or past it (recorder, journal replay, opening reconcile)."""
    want = rng.choice((0, 1, 1, 2))  # the journal replay twice as often: the step a crash must not spoil
    deadline = time.monotonic() + 90
    while True:
        day._check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError("start-up not seen within 90 s")
        st = day.status(timeout_s=1)
        if st is None:
            time.sleep(0.002)
            continue
        if st.get("phase") != "starting":
            where = "after start (start-up over before the step was seen)"
            break
        step = _startup_step(st, lines_at_spawn)
        if _STEPS.index(step) >= want:
            where = f"start-up: {step}"
            break
    day.kill()
    return where


def _kill_in_reconcile(day: Day, rng: random.Random) -> str:
    """Send an operator `reconcile` on the control socket and SIGKILL a few ms later, while it
    runs (no reply byte yet: the check fetches from the broker, resubmits the day's records and
    waits for the pipeline to book them)."""
    import socket

    day.wait_running()
    token = (day.state / "control.token").read_text().strip()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(day.state / "control.sock"))
        conn.sendall(msgspec.json.encode({"token": token, "command": "reconcile", "args": {}}) + b"\n")
        time.sleep(rng.uniform(0.0, 0.010))  # a check takes ~15 ms here
        conn.setblocking(False)
        try:
            answered = bool(conn.recv(1))
        except BlockingIOError:
            answered = False
        day.kill()
    return "after start (the reconcile answered first)" if answered else "reconcile in flight"


def _kill_right_after_start(day: Day, rng: random.Random) -> str:
    day.wait_running()
    time.sleep(rng.uniform(0.0, 0.25))
    day.kill()
    return "after start"


def _kill_in_delivery(day: Day, rng: random.Random, deliveries_left: int) -> str:
    """After a random share of what is left of the day (its events) reached the journal."""
    day.wait_running()
    progress = day.progress
    left = progress.total - progress.update()
    if left > 0:
        target = min(progress.total, progress.delivered + rng.randint(1, max(1, 2 * left // (deliveries_left + 1))))
        day.wait_until(lambda: progress.update() >= target, "delivery to reach the kill point", timeout_s=300, every_s=0.02)
    else:
        time.sleep(rng.uniform(0.0, 1.0))
    day.kill()
    return f"delivery: event {progress.update()}/{progress.total}"


def _kill_once(day: Day, kind: str, rng: random.Random, deliveries_left: int) -> str:
    """Start one incarnation and SIGKILL it at a point of `kind`; returns where it was."""
    day.progress.update()
    lines_at_spawn = day.progress.lines
    day.spawn()
    if kind == BOOT:
        return _kill_at_boot(day, rng, lines_at_spawn)
    if kind == STARTUP:
        return _kill_in_startup(day, rng, lines_at_spawn)
    if kind == RECONCILE:
        return _kill_in_reconcile(day, rng)
    if kind == AFTER_START:
        return _kill_right_after_start(day, rng)
    return _kill_in_delivery(day, rng, deliveries_left)


def _opening_checks(day: Day) -> Check:
    """A restart rebuilds the books from the journal: its opening reconcile may recover deals the
    broker reports but the journal does not hold yet (delivered after the kill point), and must
    correct nothing. Only the day's first opening corrects: it books yesterday's positions."""
    openings = [e for e in day.log_events("reconcile_result") if e.get("opening")]
    later = openings[1:]
    corrected = [e for e in later if e.get("corrections")]
    if corrected:
        return Check(False, f"{len(corrected)} restart openings corrected the books: {[e.get('corrections') for e in corrected][:5]}")
    return Check(True, f"{len(later)} restart openings, no correction")


def _startup_facts(day: Day) -> dict[str, Any]:
    """From each completed start-up's `service_started` line: journal lines replayed and start-up time."""
    started = day.log_events("service_started")
    openings = [e for e in day.log_events("reconcile_result") if e.get("opening")]
    return {"startups_completed": len(started), "replayed_max": max((e.get("replayed", 0) for e in started), default=0),
            "startup_ms_max": max((e.get("startup_ms", 0) for e in started), default=0),
            "first_opening_corrections": openings[0].get("corrections") if openings else None,
            "restart_recovered_fills": sum(e.get("recovered_fills", 0) for e in openings[1:])}


def _landing(where: str) -> str:
    """A kill point's short class for the summary: boot, start-up step, reconcile, after start, delivery."""
    for prefix in ("boot", "start-up: opening the recorder", "start-up: journal replay", "start-up: opening reconcile",
                   "reconcile", "after start", "delivery"):
        if where.startswith(prefix):
            return prefix.removeprefix("start-up: ")
    return where


def _sigkill_restarts(fast: bool, seed: int) -> ScenarioResult:
    kills = 5 if fast else 24
    orders, pace = (60, 30.0) if fast else (1000, 60.0)
    result = ScenarioResult("sigkill-restarts", f"SIGKILL x{kills} at seeded random points, restart after each")
    t0 = time.monotonic()
    rng = random.Random(seed)
    reference = day = None
    try:
        reference = Day("ref", seed, orders, pace, clickhouse=False)  # the same day uninterrupted, alongside
        reference.spawn()
        day = Day("kill", seed, orders, pace)
        plan = _kill_plan(rng, kills)
        points = [_kill_once(day, kind, rng, plan[i:].count(DELIVERY)) for i, kind in enumerate(plan)]
        day.spawn()  # the last incarnation plays the day to its end
        day.wait_running()
        books, status, code = _play_out(day)
        reference.wait_running()
        ref_books, ref_status, _ = _play_out(reference)
        result.books = _both(check_books(_quantities(books), day.truth()), compare_books(books, ref_books))
        result.rows = _rows_check(day)
        result.alerts, fired = _alerts_check(day, status)
        openings = _opening_checks(day)
        if openings.ok is False:
            result.alerts = Check(False, f"{openings.detail}; {result.alerts.detail}")
        if code != 0:
            result.error = f"execstate run exited {code} on SIGTERM"
        _orphan_facts(day, result)
        landings = Counter(_landing(p) for p in points)
        result.injected = (f"SIGKILL x{len(points)} at seeded random points ({', '.join(f'{n} {k}' for k, n in landings.most_common())}); "
                           f"{day.incarnations - 1} restarts; day of {day.progress.total} events")
        result.facts.update(
            kills=len(points), restarts=day.incarnations - 1, kill_points=points, landings=dict(landings),
            day_events=day.progress.total, journal_lines=day.progress.lines, fills_truth=len(day.session.fills),
            fills_booked=status["counts"]["fills"], dead_letters=status["counts"]["dead_letters"],
            reference_fills_booked=ref_status["counts"]["fills"], alerts_fired=sorted(fired),
            boot_s_median=round(sorted(day.boot_s)[len(day.boot_s) // 2], 2), **_startup_facts(day),
            seconds=round(time.monotonic() - t0, 1))
        return result
    except Exception as exc:  # a failed step is a failed scenario, with the service's last words
        _failed(result, exc, day)
        return result
    finally:
        for d in (day, reference):
            if d is not None:
                d.close()
