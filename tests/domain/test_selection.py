"""Collections are selected by name or by `*` pattern, as mongodump's nsInclude and
nsExclude take them, for backups (policy include/exclude) and restores alike."""

from __future__ import annotations

import pytest

from domain.values import expand, name_matches
from transfer.errors import SourceError
from transfer.runs.contract import select_collections

NAMES = ["shop.orders", "shop.orders_2025", "shop.audit_log", "crm.customers", "crm.audit_log", "odd.a*b"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("shop.*", ["shop.orders", "shop.orders_2025", "shop.audit_log"]),
        ("*.audit_*", ["shop.audit_log", "crm.audit_log"]),
        ("shop.orders", ["shop.orders"]),  # a plain name is itself, not a prefix
        ("*", NAMES),
        ("odd.a\\*b", ["odd.a*b"]),  # an escaped star is a star
        ("shop.orders?", []),  # only * is special: ? and [ are themselves
    ],
)
def test_patterns_select_names(pattern: str, expected: list[str]) -> None:
    assert [n for n in NAMES if name_matches(pattern, n)] == expected


def test_expand_keeps_the_names_order_and_reports_what_selects_nothing() -> None:
    assert expand(["crm.*", "shop.orders", "nope.*"], NAMES) == (
        ["shop.orders", "crm.customers", "crm.audit_log"],
        ["nope.*"],
    )


def test_a_backup_selects_by_pattern_and_excludes_by_pattern() -> None:
    available = {n: 1 for n in NAMES}
    assert select_collections(available, ["shop.*", "crm.*"], ["*.audit_*"], "src") == [
        "shop.orders",
        "shop.orders_2025",
        "crm.customers",
    ]
    with pytest.raises(SourceError, match="has no collection matching 'billing.\\*'"):
        select_collections(available, ["billing.*"], [], "src")
    with pytest.raises(SourceError, match="has no collection 'billing'"):
        select_collections(available, ["billing"], [], "src")
