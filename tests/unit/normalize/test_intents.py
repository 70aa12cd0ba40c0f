"""IntentRegistry: attribution of orders to strategies, persisted as JSONL."""

import json

import pytest

from execstate.domain.events import UNASSIGNED
from execstate.normalize.intents import IntentRegistry


def test_registered_order_resolves_to_its_strategy():
    # Arrange
    reg = IntentRegistry(tags={"MOMO": "momo"})
    reg.register("892f730b", "meanrev", symbol="2890")

    # Act
    strategy = reg.resolve("892f730b", custom_field="MOMO")

    # Assert
    assert strategy == "meanrev"  # the registration wins over the tag


def test_unregistered_order_resolves_by_custom_field_tag():
    # Arrange
    reg = IntentRegistry(tags={"MOMO": "momo"})

    # Act
    strategy = reg.resolve("892f730b", custom_field="MOMO")

    # Assert
    assert strategy == "momo"


@pytest.mark.parametrize("custom_field", ["", "OTHER"])
def test_order_without_registration_or_known_tag_is_unassigned(custom_field):
    # Arrange
    reg = IntentRegistry(tags={"MOMO": "momo"})

    # Act
    strategy = reg.resolve("892f730b", custom_field=custom_field)

    # Assert
    assert strategy == UNASSIGNED == "unassigned"


def test_added_tag_is_used_for_resolution():
    # Arrange
    reg = IntentRegistry()
    reg.add_tag("FTRD", "fut_trend")

    # Act
    strategy = reg.resolve("0bbe4f6d", "FTRD")

    # Assert
    assert strategy == "fut_trend"


def test_tags_passed_in_are_copied_not_shared():
    # Arrange
    tags = {"MOMO": "momo"}
    reg = IntentRegistry(tags=tags)

    # Act
    tags["MOMO"] = "changed"

    # Assert
    assert reg.resolve("x", "MOMO") == "momo"


def test_registration_survives_a_new_registry_on_the_same_file(tmp_path):
    # Arrange
    path = tmp_path / "state" / "intents.jsonl"
    first = IntentRegistry(path=path)
    first.register("892f730b", "momo", symbol="2890", custom_field="MOMO")
    first.register("0bbe4f6d", "fut_trend", symbol="TMFF6")

    # Act
    second = IntentRegistry(path=path)

    # Assert
    assert second.resolve("892f730b") == "momo"
    assert second.resolve("0bbe4f6d") == "fut_trend"
    intent = second.get("892f730b")
    assert intent is not None
    assert (intent.symbol, intent.custom_field) == ("2890", "MOMO")
    assert len(second) == 2
    assert second.corrupt_lines == 0


def test_registration_is_on_disk_before_register_returns(tmp_path):
    # Arrange
    path = tmp_path / "intents.jsonl"
    reg = IntentRegistry(path=path)

    # Act
    reg.register("892f730b", "momo")

    # Assert
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["order_id"] for line in lines] == ["892f730b"]


def test_later_registration_of_the_same_order_wins_after_reload(tmp_path):
    # Arrange
    path = tmp_path / "intents.jsonl"
    reg = IntentRegistry(path=path)
    reg.register("892f730b", "momo")
    reg.register("892f730b", "meanrev")

    # Act
    reloaded = IntentRegistry(path=path)

    # Assert
    assert reloaded.resolve("892f730b") == "meanrev"


def test_corrupt_lines_are_skipped_and_counted(tmp_path):
    # Arrange
    path = tmp_path / "intents.jsonl"
    good_a = json.dumps({"order_id": "aaaa0001", "strategy": "momo"})
    good_b = json.dumps({"order_id": "bbbb0002", "strategy": "meanrev"})
    path.write_text(
        "\n".join([
            good_a,
            "{not json",
            json.dumps({"order_id": 7, "strategy": "x"}),  # wrong type
            json.dumps({"order_id": "cccc0003"}),  # missing strategy
            "",
            good_b,
        ]) + "\n",
        encoding="utf-8",
    )

    # Act
    reg = IntentRegistry(path=path)

    # Assert
    assert reg.corrupt_lines == 3
    assert reg.resolve("aaaa0001") == "momo"
    assert reg.resolve("bbbb0002") == "meanrev"
    assert reg.get("cccc0003") is None
    assert len(reg) == 2


def test_missing_file_starts_empty_and_is_created_on_first_registration(tmp_path):
    # Arrange
    path = tmp_path / "new" / "intents.jsonl"

    # Act
    reg = IntentRegistry(path=path)
    empty = len(reg)
    reg.register("892f730b", "momo")

    # Assert
    assert empty == 0
    assert path.exists()


def test_registration_after_a_torn_last_line_survives_restart(tmp_path):
    # Arrange: a crash left half a record without a newline
    path = tmp_path / "intents.jsonl"
    path.write_bytes(b'{"order_id":"aaaa0001","strat')
    reg = IntentRegistry(path=path)

    # Act
    reg.register("bbbb0002", "momo")
    reloaded = IntentRegistry(path=path)

    # Assert
    assert reloaded.resolve("bbbb0002") == "momo"


@pytest.mark.parametrize(("order_id", "strategy", "field"), [
    ("", "momo", "order_id"),
    ("892f730b", "", "strategy"),
])
def test_register_rejects_empty_values_naming_the_field(order_id, strategy, field):
    # Arrange
    reg = IntentRegistry()

    # Act
    with pytest.raises(ValueError) as exc:
        reg.register(order_id, strategy)

    # Assert
    assert str(exc.value).startswith(f"{field}=''")
    assert len(reg) == 0


def test_rejected_registration_writes_nothing(tmp_path):
    # Arrange
    path = tmp_path / "intents.jsonl"
    reg = IntentRegistry(path=path)

    # Act
    with pytest.raises(ValueError):
        reg.register("", "momo")

    # Assert
    assert not path.exists() or path.read_bytes() == b""


@pytest.mark.parametrize("tag", ["", "TOOLONG"])
def test_tag_outside_one_to_six_characters_is_rejected_naming_it(tag):
    # Arrange
    reg = IntentRegistry()

    # Act
    with pytest.raises(ValueError) as exc:
        reg.add_tag(tag, "momo")

    # Assert
    assert str(exc.value).startswith(f"tag={tag!r}")
    assert "6 characters" in str(exc.value)
