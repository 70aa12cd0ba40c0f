"""Exact money: broker floats through their shortest repr, strict price validation, rounding, formatting."""

import math
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from execstate.domain.errors import FieldError
from execstate.domain.money import fmt_decimal, quantize_book, quantize_money, to_price


@pytest.mark.parametrize(("value", "expected"), [
    (26.85, "26.85"),
    (0.1 + 0.2, "0.30000000000000004"),  # exactly what repr prints, not the binary expansion
    (27012.0, "27012.0"),
    (1e-7, "1E-7"),
    (0.0, "0.0"),
])
def test_float_price_is_its_shortest_repr(value, expected):
    price = to_price(value)
    assert price == D(expected)
    assert str(price) == str(D(expected))


def test_float_price_is_not_the_binary_expansion():
    assert to_price(26.85) != D(26.85)


@pytest.mark.parametrize(("value", "expected"), [
    (577, D("577")),
    (0, D("0")),
    ("26.85", D("26.85")),
    (" 131 ", D("131")),
    (D("190.50"), D("190.50")),
])
def test_int_str_and_decimal_prices_are_exact(value, expected):
    price = to_price(value)
    assert price == expected and str(price) == str(expected)
    assert isinstance(price, D)


@pytest.mark.parametrize(("value", "expected"), [
    (True, "a number"),
    (False, "a number"),
    (None, "a number"),
    ([1], "a number"),
    (math.nan, "a finite price"),
    (math.inf, "a finite price"),
    (-math.inf, "a finite price"),
    ("NaN", "a finite price"),
    ("Infinity", "a finite price"),
    (D("NaN"), "a finite price"),
    (-0.05, "a price >= 0"),
    (-1, "a price >= 0"),
    ("-3", "a price >= 0"),
    (D("-0.01"), "a price >= 0"),
    ("abc", "a decimal number"),
    ("", "a decimal number"),
    ("1,000", "a decimal number"),
])
def test_bad_price_raises_field_error_naming_field_value_and_expectation(value, expected):
    with pytest.raises(FieldError) as info:
        to_price(value, "deal.price")
    err = info.value
    assert (err.field, err.expected) == ("deal.price", expected)
    assert err.value is value or (isinstance(value, float) and math.isnan(value))
    assert str(err) == f"deal.price={value!r}: expected {expected}"


def test_field_error_is_a_value_error_and_defaults_to_price():
    with pytest.raises(ValueError, match=r"^price='x': expected a decimal number$"):
        to_price("x")


@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_float_round_trips_through_its_decimal(f):
    price = to_price(f)
    assert price == D(repr(f))
    assert float(price) == f


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=0, places=6))
def test_decimal_price_is_returned_unchanged(d):
    assert to_price(d) == d
    assert to_price(str(d)) == d


@pytest.mark.parametrize(("value", "expected"), [
    ("1.00005", "1.0000"),  # tie: to even
    ("1.00015", "1.0002"),  # tie: to even
    ("1.00025", "1.0002"),
    ("1.000251", "1.0003"),
    ("-1.00005", "-1.0000"),
    ("-2.00035", "-2.0004"),
    ("3", "3.0000"),
])
def test_quantize_money_rounds_half_even_to_four_places(value, expected):
    result = quantize_money(D(value))
    assert str(result) == expected


def test_quantize_book_rounds_half_even_to_ten_places():
    assert str(quantize_book(D("0.00000000005"))) == "0E-10"
    assert str(quantize_book(D("0.00000000015"))) == "2E-10"
    assert quantize_book(D(1) / D(3)) == D("0.3333333333")


@pytest.mark.parametrize(("value", "expected"), [
    (D("1E+2"), "100"),
    (D("12.500"), "12.5"),
    (D("0"), "0"),
    (D("0.000"), "0"),
    (D("0E-10"), "0"),
    (D("-0"), "0"),
    (D("-3"), "-3"),
    (D("-3.50"), "-3.5"),
    (D("0.000001"), "0.000001"),
    (D("1.5E-7"), "0.00000015"),
    (D("27012.0"), "27012"),
    (D("1234567890.1234567890"), "1234567890.123456789"),
])
def test_fmt_decimal_has_no_exponent_and_no_trailing_zeros(value, expected):
    assert fmt_decimal(value) == expected


@given(st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=-10**12, max_value=10**12))
def test_fmt_decimal_round_trips_without_exponent(d):
    text = fmt_decimal(d)
    assert D(text) == d
    assert "E" not in text.upper()
    assert "." not in text or not text.endswith(("0", "."))
