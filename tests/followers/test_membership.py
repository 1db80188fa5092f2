"""The membership posterior on hand-computed windows."""

from __future__ import annotations

from followers.membership import member_class, member_classes

ALL = {(r, f): member_class(r, f) for r in (False, True) for f in (False, True)}


def members(mask: int) -> set[tuple[bool, bool]]:
    return {cls for cls, bit in ALL.items() if mask & bit}


def test_no_excess_means_no_member() -> None:
    """A window at or below its usual count has no excess to belong to (and no usual is no test)."""
    assert member_classes(10, 10, 10, 10.0, 0.2, 0.2, 0.99) == 0
    assert member_classes(5, 5, 5, 10.0, 0.2, 0.2, 0.99) == 0
    assert member_classes(5, 5, 5, 0.0, 0.2, 0.2, 0.99) == 0


def test_a_large_excess_of_risky_newcomers_makes_every_class_but_the_established_clean_one_a_member() -> None:
    """100 followers where 0.1 were expected, 80 risky and 95 never seen before, against a usual
    20 % risky / 10 % new: prior odds ~1000, so even a clean newcomer is a member (the order's
    aged accounts); a clean account with history is not (1000 * 0.2/0.8 * 0.05/0.9 ~ 14 < 99)."""
    mask = member_classes(100, 80, 95, 0.1, 0.2, 0.1, 0.99)
    assert members(mask) == {(True, True), (True, False), (False, True)}


def test_a_mostly_usual_window_makes_only_the_most_suspicious_class_a_member() -> None:
    """30 followers where 20 were expected (prior odds 0.5), the excess all risky newcomers against
    a usual 10 % risky / 5 % new: a risky newcomer's odds are 0.5 * (0.983/0.1) * (0.983/0.05) ~ 97
    — a member at a 0.9 bar, not at 0.99 — and no other class comes close."""
    assert members(member_classes(30, 12, 11, 20.0, 0.1, 0.05, 0.9)) == {(True, True)}
    assert member_classes(30, 12, 11, 20.0, 0.1, 0.05, 0.99) == 0


def test_a_higher_bar_never_adds_members() -> None:
    """The member set shrinks (or stays) as the posterior threshold rises."""
    for threshold_low, threshold_high in ((0.5, 0.9), (0.9, 0.99), (0.99, 0.999)):
        low = member_classes(40, 25, 30, 2.0, 0.25, 0.2, threshold_low)
        high = member_classes(40, 25, 30, 2.0, 0.25, 0.2, threshold_high)
        assert high & ~low == 0
