"""Settings: the repo's YAML loads; every bad value is a ConfigError naming key, value, expectation."""

from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from execstate.config import DEFAULT_CONFIG_PATH, Settings, load_settings, parse_settings
from execstate.domain.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "execution.yaml"


def _error(data) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_settings(data)
    return str(exc.value)


def _file(tmp_path, text: str) -> Path:
    path = tmp_path / "execution.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def test_repo_config_file_loads_with_exact_decimals():
    # Act
    s = load_settings(REPO_CONFIG)

    # Assert
    assert isinstance(s, Settings)
    assert s.fees.stock.discount == Decimal("0.6")
    assert s.fees.stock.commission_rate == Decimal("0.001425")
    assert type(s.fees.stock.commission_rate) is Decimal
    assert s.multipliers.products["TXF"] == Decimal(200)
    assert s.multipliers.products["TXO"] == Decimal(50)
    assert s.strategies.tags["MOMO"] == "momo"
    assert s.snapshot_interval_ms > 0


def test_default_path_is_the_repo_config():
    # Assert
    assert DEFAULT_CONFIG_PATH.resolve() == REPO_CONFIG


def test_load_without_a_path_reads_the_repo_config():
    # Act
    s = load_settings()

    # Assert
    assert s == load_settings(REPO_CONFIG)


def test_empty_mapping_gives_defaults():
    # Act
    s = parse_settings({})

    # Assert
    assert s.snapshot_interval_ms == 1000
    assert s.fees.stock.discount == Decimal(1)
    assert s.fees.stock.rounding == "floor"
    assert s.multipliers.products["TXF"] == Decimal(200)
    assert s.multipliers.default_future == Decimal(2000)
    assert s.strategies.tags == {}


def test_empty_file_gives_defaults(tmp_path):
    # Arrange
    path = _file(tmp_path, "# nothing set\n")

    # Act
    s = load_settings(path)

    # Assert
    assert s == parse_settings({})


def test_unquoted_yaml_float_still_becomes_the_written_decimal(tmp_path):
    # Arrange
    path = _file(tmp_path, "fees:\n  stock:\n    discount: 0.6\n")

    # Act
    s = load_settings(path)

    # Assert
    assert s.fees.stock.discount == Decimal("0.6")


def test_settings_are_frozen():
    # Arrange
    s = parse_settings({})

    # Act / Assert
    with pytest.raises(ValidationError):
        s.snapshot_interval_ms = 5  # type: ignore[misc]


def test_settings_mappings_cannot_be_mutated():
    # Arrange
    s = parse_settings({})

    # Act / Assert
    with pytest.raises(TypeError):
        s.multipliers.products["TXF"] = Decimal(1)  # type: ignore[index]


# ---------------------------------------------------------------------------------------
# Bad values
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "key", "value", "expected"), [
    ({"fees": {"stock": {"discount": "1.7"}}}, "fees.stock.discount", "'1.7'", "less than or equal to 1"),
    ({"fees": {"stock": {"discount": "0"}}}, "fees.stock.discount", "'0'", "greater than 0"),
    ({"fees": {"stock": {"rounding": "up"}}}, "fees.stock.rounding", "'up'", "'floor', 'round' or 'ceil'"),
    ({"fees": {"stock": {"tax_rate": "abc"}}}, "fees.stock.tax_rate", "'abc'", "decimal"),
    ({"snapshot_interval_ms": -5}, "snapshot_interval_ms", "-5", "greater than 0"),
    ({"snapshot_interval_ms": 0}, "snapshot_interval_ms", "0", "greater than 0"),
    ({"queue": {"batch_max": "many"}}, "queue.batch_max", "'many'", "integer"),
    ({"multipliers": {"products": {"TXF": "-200"}}}, "multipliers.products.TXF", "'-200'", "greater than 0"),
    ({"reconcile": {"confirmations": 11}}, "reconcile.confirmations", "11", "less than or equal to 10"),
    ({"rate_limits": {"portfolio_queries_per_window": 26}}, "rate_limits.portfolio_queries_per_window", "26",
     "less than or equal to 25"),
])
def test_bad_value_error_names_key_value_and_expectation(data, key, value, expected):
    # Act
    message = _error(data)

    # Assert
    assert f"{key} = {value}: expected" in message
    assert expected in message


def test_unknown_key_is_an_error_naming_it():
    # Act
    message = _error({"snapshot_intervl_ms": 500})

    # Assert
    assert "snapshot_intervl_ms = 500: unknown key" in message


def test_unknown_nested_key_is_an_error_naming_its_path():
    # Act
    message = _error({"fees": {"stock": {"discout": "0.6"}}})

    # Assert
    assert "fees.stock.discout = '0.6': unknown key" in message


def test_strategy_tag_longer_than_custom_field_allows_is_an_error():
    # Act
    message = _error({"strategies": {"tags": {"TOOLONG7": "x"}}})

    # Assert
    assert "strategies.tags.TOOLONG7" in message
    assert "'TOOLONG7'" in message
    assert "6 characters" in message


def test_every_bad_key_is_listed_not_just_the_first():
    # Act
    message = _error({"snapshot_interval_ms": -1, "fees": {"stock": {"rounding": "up"}}})

    # Assert
    assert "snapshot_interval_ms = -1" in message
    assert "fees.stock.rounding = 'up'" in message


def test_boolean_for_an_integer_setting_is_an_error():
    # Act / Assert
    _error({"snapshot_interval_ms": True})


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("42\n", "int"), ("just text\n", "str")])
def test_file_that_is_not_a_mapping_is_an_error(tmp_path, text, kind):
    # Arrange
    path = _file(tmp_path, text)

    # Act
    with pytest.raises(ConfigError) as exc:
        load_settings(path)

    # Assert
    message = str(exc.value)
    assert str(path) in message
    assert "expected a mapping" in message
    assert kind in message


def test_invalid_yaml_is_an_error_naming_the_file(tmp_path):
    # Arrange
    path = _file(tmp_path, "fees:\n  stock: [unclosed\n")

    # Act
    with pytest.raises(ConfigError) as exc:
        load_settings(path)

    # Assert
    assert str(path) in str(exc.value)
    assert "not valid YAML" in str(exc.value)


def test_missing_file_is_an_error_naming_the_file(tmp_path):
    # Arrange
    path = tmp_path / "nope.yaml"

    # Act
    with pytest.raises(ConfigError) as exc:
        load_settings(path)

    # Assert
    assert str(path) in str(exc.value)
    assert "cannot read" in str(exc.value)


def test_bad_value_in_a_file_names_the_file_and_the_key(tmp_path):
    # Arrange
    path = _file(tmp_path, 'fees:\n  stock:\n    discount: "1.7"\n')

    # Act
    with pytest.raises(ConfigError) as exc:
        load_settings(path)

    # Assert
    message = str(exc.value)
    assert str(path) in message
    assert "fees.stock.discount = '1.7': expected" in message
