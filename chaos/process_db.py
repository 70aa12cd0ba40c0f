"""Process-level chaos, scenarios `database-down` and `database-down-sigkill` (listed by
`chaos.process.scenarios`): ClickHouse (HTTP) taken down mid-session, with and without a SIGKILL
while batches are spooled; see `chaos.process` for the verdicts.

Entry points: `_database_down(fast, seed)`, `_database_down_sigkill(fast, seed)` -> ScenarioResult.
Invariants: a recorder outage never stops trading (no HALT); spooled batches survive a SIGKILL;
every `Day` is closed in `finally`.
"""

from __future__ import annotations

import time

from chaos.harness import Check, ScenarioResult, check_books
from chaos.proc_verdicts import _alerts_check, _failed, _orphan_facts, _play_out, _quantities, _rows_check
from chaos.procs import SPOOL_ALERT, Day

# --- scenario 2: the database down for minutes ---------------------------------------------


def _database_down(fast: bool, seed: int) -> ScenarioResult:
    outage_s = 5.0 if fast else 120.0
    orders, pace = (60, 20.0) if fast else (400, 6.0)  # the day outlasts the outage
    spool_age_s = 60.0 if fast else 30.0  # full: below the outage, so the stale-spool alert is due
    expected = () if fast else (f"{SPOOL_ALERT} (stale)",)
    result = ScenarioResult("database-down", f"ClickHouse (HTTP) down {outage_s:g} s mid-session")
    t0 = time.monotonic()
    day = None
    try:
        day = Day("dbdown", seed, orders, pace, overrides={"alerts": {"spool_age_s": spool_age_s}})
        day.spawn()
        day.wait_running()
        day.wait_until(lambda: day.progress.update() >= day.progress.total // 5, "a fifth of the day")
        day.clickhouse.stop()
        down_at = time.monotonic()
        seen = {"spool_rows": 0, "spool_age_s": 0.0, "halted": False, "delivered": day.progress.update()}
        while time.monotonic() - down_at < outage_s:
            st = day.status() or {}
            rec = st.get("recorder") or {}
            seen["spool_rows"] = max(seen["spool_rows"], rec.get("spool_rows", 0))
            seen["spool_age_s"] = max(seen["spool_age_s"], rec.get("spool_oldest_age_s") or 0.0)
            seen["halted"] |= bool((st.get("halt") or {}).get("halted"))
            day._check_alive()
            time.sleep(0.5)
        seen["delivered"] = day.progress.update() - seen["delivered"]
        day.clickhouse.start()
        up_at = time.monotonic()
        day.wait_recorded()
        drained_s = time.monotonic() - up_at
        still_playing = day.progress.update() < day.progress.total
        books, status, code = _play_out(day)
        result.books = check_books(_quantities(books), day.truth())
        result.rows = _rows_check(day)
        if not seen["spool_rows"]:
            result.rows = Check(False, f"nothing spooled during the outage ({result.rows.detail})")
        result.alerts, fired = _alerts_check(day, status, expected)
        if seen["halted"]:
            result.alerts = Check(False, f"HALT during the outage; {result.alerts.detail}")
        # the stale cause reads the oldest batch's age: it resolves with the drain. The growing cause
        # (deriv(recorder_spool_rows[5m]) > 0, as in alerts.yml) legitimately fires on for about a
        # minute more: the regression over 5 minutes of a ramp then a drop stays positive until
        # enough zeros follow it; it is neither expected nor forbidden.
        still = [f"{a['alert']} ({a['cause']})" for a in status["alerts"] if a["alert"] == SPOOL_ALERT and a["cause"] == "stale"]
        if still:
            result.alerts = Check(False, f"{still} still firing after the drain; {result.alerts.detail}")
        if not seen["delivered"]:
            result.error = "the day did not play during the outage"
        if code != 0:
            result.error = f"execstate run exited {code} on SIGTERM"
        result.injected = (f"ClickHouse (HTTP) down {outage_s:g} s mid-session: {seen['delivered']} events played meanwhile, "
                           f"{seen['spool_rows']} rows spooled (oldest {seen['spool_age_s']:.0f} s), drained in {drained_s:.1f} s"
                           f"{'' if still_playing else ' (after the day ended)'}")
        result.facts.update(outage_s=outage_s, spool_age_threshold_s=spool_age_s, spool_rows_max=seen["spool_rows"],
                            spool_age_max_s=round(seen["spool_age_s"], 1), drained_s=round(drained_s, 1),
                            events_during_outage=seen["delivered"], day_events=day.progress.total, fills_truth=len(day.session.fills),
                            fills_booked=status["counts"]["fills"], alerts_fired=sorted(fired), seconds=round(time.monotonic() - t0, 1))
        return result
    except Exception as exc:  # a failed step is a failed scenario, with the service's last words
        _failed(result, exc, day)
        return result
    finally:
        if day is not None:
            day.close()


# --- scenario 3: the database down, SIGKILL with batches spooled ----------------------------


def _spool_rows(day: Day) -> int:
    return ((day.status() or {}).get("recorder") or {}).get("spool_rows", 0)


def _spool_files(day: Day) -> list[str]:
    return sorted(p.name for p in (day.state / "spool").glob("*.batch"))


def _database_down_sigkill(fast: bool, seed: int) -> ScenarioResult:
    kills_while_down = 1 if fast else 2  # full: a restart with the database still down, killed again
    orders, pace = (60, 40.0) if fast else (200, 25.0)
    result = ScenarioResult("database-down-sigkill", f"ClickHouse down, SIGKILL x{kills_while_down} with batches spooled")
    t0 = time.monotonic()
    day = None
    try:
        day = Day("dbkill", seed, orders, pace)
        day.spawn()
        day.wait_running()
        day.wait_until(lambda: day.progress.update() >= day.progress.total // 4, "a quarter of the day")
        day.clickhouse.stop()
        spooled, lost = [], []
        for i in range(kills_while_down):
            if i:
                day.spawn()  # the database is still down: the spool keeps the old batches and grows
                day.wait_running()
            before = day.progress.update()
            day.wait_until(lambda: day.progress.update() >= before + 15 and _spool_rows(day) > 0, "rows spooled and more of the day played")
            files = _spool_files(day)
            day.kill()
            spooled.append(len(files))
            lost += [f for f in files if not (day.state / "spool" / f).exists()]  # acknowledged: must survive
        day.clickhouse.start()
        day.spawn()  # drains the spool first, replays the journal (same ids), plays the rest of the day
        day.wait_running()
        books, status, code = _play_out(day)
        result.books = check_books(_quantities(books), day.truth())
        result.rows = _rows_check(day)
        if lost:
            result.rows = Check(False, f"spooled batches gone after SIGKILL: {lost[:3]}")
        result.alerts, fired = _alerts_check(day, status)
        if code != 0:
            result.error = f"execstate run exited {code} on SIGTERM"
        _orphan_facts(day, result)
        result.injected = (f"ClickHouse down, SIGKILL x{kills_while_down} with {'+'.join(map(str, spooled))} batches spooled, "
                           f"restart with the database back")
        result.facts.update(kills=kills_while_down, spool_batches_at_kill=spooled, day_events=day.progress.total,
                            fills_truth=len(day.session.fills), fills_booked=status["counts"]["fills"],
                            alerts_fired=sorted(fired),
                            seconds=round(time.monotonic() - t0, 1))
        return result
    except Exception as exc:  # a failed step is a failed scenario, with the service's last words
        _failed(result, exc, day)
        return result
    finally:
        if day is not None:
            day.close()

