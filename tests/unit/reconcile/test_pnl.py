"""PnL reconciliation: our open lots valued the broker's way, against `list_positions` pnl.

Figures are worked by hand from the reference formula (shared/reference/shioaji-facts.md §5):
stock long `pnl = last*qty - floor(0.1425% * last*qty) - floor(0.3% * last*qty) - (cost + buy fees)`.
Fees here: 0.1425% x 0.6 discount, floored, minimum 20 (board lots) / 1 (odd lots), as the
repository's config and the simulated broker.
"""

from decimal import Decimal as D

from execstate.config import parse_settings
from execstate.domain.events import FillEvent
from execstate.domain.reports import BrokerPosition
from execstate.positions.fees import FeeSchedule
from execstate.positions.store import canonical_key
from execstate.reconcile.pnl import (
    BrokerEstimate, OpenCost, OpenCostCache, PnlDiscrepancy, broker_style_pnl, compare_pnl, open_costs)

ACCT = "9A95-1234567"
FUT = "F002000-7654321"
FEES = FeeSchedule(parse_settings({"fees": {"stock": {"discount": "0.6"}}}).fees)
EST = BrokerEstimate()
T0 = 1_779_330_600_000_000_000
THRESHOLD = D(100)


def _fill(i, side, price, qty, *, symbol="2330", account=ACCT, kind="STK", lot="Common", etf=False, strategy="a", correction="", t=None):
    code = symbol.split(":")[0] if kind == "STK" else symbol[:3]
    cond = (symbol.split(":")[1] if ":" in symbol else "Cash") if kind == "STK" else ""
    return FillEvent(
        event_id=f"F:{account}:o{i}:{i:06d}", account=account, order_id=f"o{i}", seqno=f"{i}", ordno="A", exchange_seq=f"{i:06d}",
        strategy=strategy, symbol=symbol, code=code, kind=kind, side=side, price=D(price), quantity=qty,
        multiplier=D(1) if kind == "STK" else D(200), is_etf=etf, order_cond=cond, order_lot=lot if kind == "STK" else "",
        market_type="" if kind == "STK" else "Day", custom_field="", ts_event=T0 + (i if t is None else t) * 1_000_000,
        ts_recv=T0 + 10**10 + i, correction=correction,
    )


def _row(symbol, qty, last, pnl, account=ACCT, avg="0"):
    return BrokerPosition(account, symbol, symbol.split(":")[0], qty, D(avg), D(last), D(pnl))


def _compare(fills, rows, ours=None):
    costs = open_costs(fills, FEES)
    books = ours if ours is not None else {k: c.quantity for k, c in costs.items()}
    return compare_pnl(costs, books, rows, [ACCT, FUT], None, THRESHOLD, EST)


# --- our side, the broker's way -------------------------------------------------------------


def test_board_lot_long_nets_estimated_sale_fee_and_tax_and_carries_the_buy_fee():
    # Arrange: 2000 shares at 580; buy fee floor(1,160,000 x 0.000855) = 991
    (cost,) = open_costs([_fill(1, "Buy", "580", 2000)], FEES).values()

    # Act: at 590, value 1,180,000: fee estimate floor(1681.5) = 1681, tax floor(3540) = 3540
    pnl, allowance = broker_style_pnl(cost, D("590"), EST)

    # Assert
    assert (cost.quantity, cost.cost, cost.opening_costs) == (2000, D(1_160_000), D(991))
    assert pnl == D(1_180_000 - 1681 - 3540 - 1_160_991) == D(13_788) and allowance == 0


def test_odd_lot_reproduces_issue_177_within_one_twd():
    # Arrange: the reference's 200 shares at a fee-inclusive 568.05 (113,610 = 113,513 + odd-lot fee 97)
    fills = [_fill(1, "Buy", "567.565", 200, lot="IntradayOdd")]

    # Act: the broker reported pnl 1281 at last 577; the formula gives 115400 - 164 - 346 - 113610 = 1280
    check = _compare(fills, [_row("2330", 200, "577", "1281", avg="568.05")])

    # Assert: compared, 1 TWD apart, under the threshold
    (cost,) = open_costs(fills, FEES).values()
    assert cost.cost + cost.opening_costs == D(113_610)
    assert broker_style_pnl(cost, D("577"), EST) == (D(1280), D(0))
    assert check.compared == 1 and check.discrepancies == [] and check.max_diff_twd[ACCT] == D("1.00")


def test_etf_long_uses_the_etf_tax_rate():
    (cost,) = open_costs([_fill(1, "Buy", "190", 1000, symbol="0050", etf=True)], FEES).values()

    pnl, _ = broker_style_pnl(cost, D("200"), EST)

    # buy fee floor(190,000 x 0.000855) = 162; at 200: fee floor(285) = 285, tax 0.1% = 200
    assert pnl == D(200_000 - 285 - 200 - 190_162) == D(9353)


def test_futures_are_fifo_lots_times_multiplier_without_fees():
    # Arrange: long 1 at 27000 and 1 at 27100, sold 1 at 27200: FIFO leaves the 27100 lot
    # (average cost would say 27050 and 20,000 TWD: the broker's basis is the open lots')
    fills = [_fill(1, "Buy", "27000", 1, symbol="TXFL6", account=FUT, kind="FUT"),
             _fill(2, "Buy", "27100", 1, symbol="TXFL6", account=FUT, kind="FUT"),
             _fill(3, "Sell", "27200", 1, symbol="TXFL6", account=FUT, kind="FUT")]

    # Act: the broker: (27150 - 27100) x 1 x 200 = 10,000
    check = _compare(fills, [_row("TXFL6", 1, "27150", "10000", account=FUT)])

    # Assert
    assert open_costs(fills, FEES)[(FUT, "TXFL6")].cost == D(27100)
    assert check.compared == 1 and check.discrepancies == [] and check.max_diff_twd == {ACCT: D("0.00"), FUT: D("0.00")}


def test_short_futures_sign():
    (cost,) = open_costs([_fill(1, "Sell", "27000", 2, symbol="MXFL6", account=FUT, kind="FUT")], FEES).values()

    pnl, allowance = broker_style_pnl(cost, D("26950"), EST)

    assert pnl == D(50 * 2 * 200) and allowance == 0  # (last - price) x (-2) x 200


def test_stock_short_is_the_mirror_image_with_an_allowance_for_the_unverified_convention():
    # Arrange: short sale of 1000 at 210: fee floor(179.55) = 179, tax 630 -> net proceeds 209,191
    (cost,) = open_costs([_fill(1, "Sell", "210", 1000, symbol="2317:ShortSelling")], FEES).values()

    # Act: at 205, value 205,000, buy-back fee estimate floor(292.125) = 292
    pnl, allowance = broker_style_pnl(cost, D("205"), EST)

    # Assert
    assert (cost.quantity, cost.opening_costs) == (-1000, D(809))
    assert pnl == D(209_191 - 205_000 - 292) == D(3899)
    assert allowance == D(809 + 292)


def test_short_within_its_allowance_is_not_a_discrepancy_but_a_price_error_beyond_it_is():
    fills = [_fill(1, "Sell", "210", 1000, symbol="2317:ShortSelling")]

    gross = _compare(fills, [_row("2317:ShortSelling", -1000, "205", "5000")])  # a broker netting nothing: 1101 away
    wrong = _compare(fills, [_row("2317:ShortSelling", -1000, "205", "6000")])  # and a further 1000

    assert gross.discrepancies == [] and gross.max_diff_twd[ACCT] == D("0.00")
    (d,) = wrong.discrepancies
    assert (d.diff_twd, d.tolerance_twd) == (D("2101.00"), D("1201.00"))
    assert wrong.max_diff_twd[ACCT] == D("1000.00")


# --- what counts ---------------------------------------------------------------------------------


def test_one_twd_rounding_difference_does_not_count():
    fills = [_fill(1, "Buy", "580", 2000)]

    check = _compare(fills, [_row("2330", 2000, "590", "13789")])

    assert check.compared == 1 and check.discrepancies == [] and check.max_diff_twd[ACCT] == D("1.00")


def test_a_real_price_error_counts_with_ours_broker_and_the_difference():
    # Arrange: the broker bought at 581, not 580 (and paid floor(1,162,000 x 0.000855) = 993)
    fills = [_fill(1, "Buy", "580", 2000)]
    broker_pnl = 1_180_000 - 1681 - 3540 - (1_162_000 + 993)

    # Act
    check = _compare(fills, [_row("2330", 2000, "590", str(broker_pnl))])

    # Assert
    assert check.discrepancies == [PnlDiscrepancy(ACCT, "2330", D("13788.00"), D(broker_pnl), D("-2002.00"), D("100.00"))]
    assert check.max_diff_twd[ACCT] == D("2002.00")


def test_exactly_the_threshold_does_not_count():
    check = _compare([_fill(1, "Buy", "580", 2000)], [_row("2330", 2000, "590", str(13_788 + 100))])

    assert check.discrepancies == [] and check.max_diff_twd[ACCT] == D("100.00")


def test_quantity_mismatches_and_rows_without_a_mark_are_not_compared():
    fills = [_fill(1, "Buy", "580", 2000), _fill(2, "Buy", "26.85", 1000, symbol="2890")]
    rows = [
        _row("2330", 3000, "590", "0"),  # the broker holds more: a quantity mismatch, reported as such
        BrokerPosition(ACCT, "2890", "2890", 1000, D("26.87"), None, D("0")),  # no last price
        _row("2454", 1000, "1400", "0"),  # nothing of ours
    ]

    check = _compare(fills, rows)

    assert check.compared == 0 and check.discrepancies == [] and check.max_diff_twd == {ACCT: 0, FUT: 0}


def test_books_and_restated_lots_must_agree_too():
    # a fill booked between the two reads: the books say 2000, the lots 3000 -> skipped this time
    fills = [_fill(1, "Buy", "580", 2000), _fill(2, "Buy", "581", 1000)]

    check = _compare(fills, [_row("2330", 2000, "590", "0")], ours={(ACCT, "2330"): 2000})

    assert check.compared == 0


def test_only_wanted_accounts_and_symbols_are_compared():
    costs = open_costs([_fill(1, "Buy", "580", 2000), _fill(2, "Buy", "26.85", 1000, symbol="2890")], FEES)
    ours = {k: c.quantity for k, c in costs.items()}
    rows = [_row("2330", 2000, "590", "0"), _row("2890", 1000, "27", "-1000"),  # both far off (ours: 13,788 and 9)
            _row("TXFL6", 1, "27150", "-1000000", account=FUT)]

    check = compare_pnl(costs, ours, rows, [ACCT], ["2890"], THRESHOLD, EST)

    assert [d.symbol for d in check.discrepancies] == ["2890"] and check.compared == 1
    assert check.max_diff_twd == {ACCT: D("1009.00")}


# --- the restatement ------------------------------------------------------------------------------


def test_lots_close_fifo_over_all_strategies_and_keep_their_share_of_the_buy_fee():
    # Arrange: strategy a buys 1000 at 100 (fee 85) and 1000 at 110 (fee 94); b sells 1500 at 120
    fills = [_fill(1, "Buy", "100", 1000), _fill(2, "Buy", "110", 1000), _fill(3, "Sell", "120", 1500, strategy="b")]

    # Act
    (cost,) = open_costs(fills, FEES).values()

    # Assert: 500 of the 110 lot left, with half its fee
    assert cost == OpenCost(500, D(55_000), D(47), D(1), "STK", False)


def test_a_flip_opens_the_remainder_with_its_share_of_the_fill_costs():
    # buy 1000 at 100, sell 3000 at 100 (cash day-trade short of 2000): fee floor(256.5) = 256, tax 900
    (cost,) = open_costs([_fill(1, "Buy", "100", 1000), _fill(2, "Sell", "100", 3000)], FEES).values()

    assert (cost.quantity, cost.cost, cost.opening_costs) == (-2000, D(-200_000), (D(256) + D(900)) * 2000 / 3000)


def test_opening_corrections_are_the_oldest_lots_and_carry_no_fees():
    # Arrange: the opening correction (yesterday's 1000 at a fee-inclusive 500.5) is decided after a
    # morning buy was booked (a first start mid-day); a sale of 1000 must close yesterday's lot
    fills = [_fill(1, "Buy", "510", 1000, t=10), _fill(2, "Buy", "500.5", 1000, correction="startup", t=20),
             _fill(3, "Sell", "520", 1000, t=30)]

    (cost,) = open_costs(fills, FEES).values()

    assert (cost.quantity, cost.cost, cost.opening_costs) == (1000, D(510_000), D(436))  # floor(510,000 x 0.000855)


def test_keys_are_account_and_symbol_with_the_condition():
    costs = open_costs([_fill(1, "Buy", "580", 1000), _fill(2, "Buy", "585", 1000, symbol="2330:MarginTrading")], FEES)

    assert {k: c.cost for k, c in costs.items()} == {(ACCT, "2330"): D(580_000), (ACCT, "2330:MarginTrading"): D(585_000)}


def test_cache_matches_only_new_fills_and_equals_open_costs_whatever_arrives():
    # Arrange: a day of fills on two symbols, delivered in batches; some arrive late (an earlier
    # exchange time, as a reordered delivery) and an opening correction comes mid-day
    import random

    rng = random.Random(7)
    day = [_fill(i, rng.choice(["Buy", "Sell"]), str(500 + rng.randrange(100)), rng.choice([1000, 2000, 37]),
                 symbol=rng.choice(["2330", "2330:MarginTrading", "2890"]), t=i * 10) for i in range(1, 301)]
    late = [_fill(1000 + i, "Buy", "510", 1000, symbol="2330", t=i * 10 * 7 + 5) for i in range(1, 6)]
    opening = _fill(2000, "Buy", "505.5", 3000, symbol="2890", correction="startup", t=3000)
    cache = OpenCostCache(FEES)
    booked: list = []

    # Act / Assert: after every batch the cache (given the store's canonical order) says what open_costs says
    for batch in (day[:100], day[100:150] + late[:2], [], day[150:250] + [opening], day[250:] + late[2:]):
        booked += batch
        assert cache(sorted(booked, key=canonical_key)) == open_costs(booked, FEES)
    assert cache.rematched >= 2  # late fills and the opening correction sent their keys back to the start
