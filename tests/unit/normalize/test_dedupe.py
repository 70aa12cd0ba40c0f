"""SeenKeys: a bounded, insertion-ordered memory of event keys."""

import pytest

from execstate.normalize.dedupe import SeenKeys


def test_first_add_is_new_and_second_add_is_a_repeat():
    # Arrange
    seen = SeenKeys(10)

    # Act
    first = seen.add(("D", "9A95-1234567", "892f730b", "669915"))
    second = seen.add(("D", "9A95-1234567", "892f730b", "669915"))

    # Assert
    assert first is True
    assert second is False
    assert len(seen) == 1


def test_keys_differing_in_one_part_are_distinct():
    # Arrange
    seen = SeenKeys(10)
    seen.add(("D", "acct", "trade", "seq-1"))

    # Act
    fresh = seen.add(("D", "acct", "trade", "seq-2"))

    # Assert
    assert fresh is True
    assert len(seen) == 2


def test_capacity_evicts_the_oldest_key_first():
    # Arrange
    seen = SeenKeys(3)
    for key in ("a", "b", "c"):
        seen.add(key)

    # Act
    seen.add("d")

    # Assert
    assert "a" not in seen
    assert all(k in seen for k in ("b", "c", "d"))
    assert len(seen) == 3
    assert seen.evicted == 1


def test_evicted_key_is_new_again():
    # Arrange
    seen = SeenKeys(2)
    seen.add("a")
    seen.add("b")
    seen.add("c")  # evicts "a"

    # Act
    fresh = seen.add("a")

    # Assert
    assert fresh is True
    assert "b" not in seen  # "a" re-entered, evicting the next oldest
    assert seen.evicted == 2


def test_repeated_key_does_not_refresh_its_age():
    # Arrange
    seen = SeenKeys(2)
    seen.add("a")
    seen.add("b")
    seen.add("a")  # a repeat: not moved to the back

    # Act
    seen.add("c")

    # Assert
    assert "a" not in seen
    assert "b" in seen and "c" in seen


def test_memory_stays_bounded_under_many_keys():
    # Arrange
    seen = SeenKeys(100)

    # Act
    for i in range(10_000):
        seen.add(("D", "acct", str(i)))

    # Assert
    assert len(seen) == 100
    assert seen.evicted == 9_900
    assert ("D", "acct", "9999") in seen
    assert ("D", "acct", "9899") not in seen


@pytest.mark.parametrize("capacity", [0, -1])
def test_non_positive_capacity_is_rejected_naming_it(capacity):
    # Act / Assert
    with pytest.raises(ValueError, match=rf"capacity={capacity}"):
        SeenKeys(capacity)
