"""Which of a window's segments a catalog resync believes, from their manifests alone."""

from __future__ import annotations

from typing import Any

from service.sync import _chain

WINDOW = {"kind": "postgresql", "slot": "snapledger_x", "from_position": "0/100", "from_time": None}


def _found(start: str, end: str, window: dict[str, Any] = WINDOW) -> dict[str, Any]:
    return {"window": window, "segment": {"from_lsn": start, "to_lsn": end, "key": f"{start}-{end}"}}


def test_the_prefix_a_killed_step_left_is_passed_over():
    orphan, recorded, next_one = _found("0/100", "0/180"), _found("0/100", "0/200"), _found("0/200", "0/300")
    chain, left = _chain([orphan, next_one, recorded])
    assert [s["key"] for s in chain] == ["0/100-0/200", "0/200-0/300"]
    assert [s["key"] for s, _ in left] == ["0/100-0/180"]


def test_the_chain_ends_at_a_gap_and_names_what_follows_it():
    chain, left = _chain([_found("0/100", "0/200"), _found("0/300", "0/400")])
    assert [s["key"] for s in chain] == ["0/100-0/200"]
    assert left and "reaches 0/200" in left[0][1]


def test_a_segment_of_another_window_is_not_on_the_chain():
    other = {**WINDOW, "slot": "snapledger_y"}
    chain, left = _chain([_found("0/100", "0/200"), _found("0/200", "0/300", other)])
    assert [s["key"] for s in chain] == ["0/100-0/200"] and len(left) == 1


def test_oplog_positions_order_by_seconds_then_increment():
    window = {**WINDOW, "from_position": "1796142873.9"}
    chain, _ = _chain(
        [_found("1796142873.9", "1796142873.10", window), _found("1796142873.10", "1796142874.1", window)]
    )
    assert [s["to_lsn"] for s in chain] == ["1796142873.10", "1796142874.1"]
