"""The OpenAPI document's patterns say exactly what the validators accept: a value the
document allows is one the server takes, and a value it forbids one the server refuses."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.patterns import cron, cron_never_fires, duration, number
from domain.errors import InvalidValue
from domain.values import MAX_DURATION_SECONDS, check_cron, parse_duration

CRON, NEVER, DURATION = re.compile(cron()), re.compile(cron_never_fires()), re.compile(duration())
SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def _accepted(check, value: str) -> bool:  # noqa: ANN001
    try:
        check(value, "f")
    except InvalidValue:
        return False
    return True


@pytest.mark.parametrize("low,high", [(0, 59), (1, 31), (1, 12), (0, 7), (1, 52), (7, 45), (1, 36600)])
def test_number_ranges_are_exact(low, high):
    pattern = re.compile(f"^{number(low, high)}$")
    assert [n for n in range(0, high + 100) if bool(pattern.match(str(n))) != (low <= n <= high)] == []
    assert pattern.match("0" + str(high)) and not pattern.match(str(high + 1))


def test_duration_pattern_is_the_validator():
    top = MAX_DURATION_SECONDS
    for text in [
        "30d",
        " 12 h ",
        "1s",
        f"{top}s",
        f"{top + 1}s",
        "0d",
        "30",
        "d",
        f"{top // 604800}w",
        "-1d",
    ]:
        assert bool(DURATION.match(text)) == _accepted(parse_duration, text), text

    @SETTINGS
    @given(st.from_regex(DURATION, fullmatch=True) | st.text("0123456789 smhdwx\t", max_size=14))
    def same(text: str) -> None:
        assert bool(DURATION.match(text)) == _accepted(parse_duration, text), text

    same()


def _cron_allowed(text: str) -> bool:
    return bool(CRON.match(text)) and not NEVER.search(text)


def test_cron_pattern_is_the_validator():
    examples = ["0 3 * * *", "*/5 * * * * 30", "@daily", "", "  ", "99 * * * *", "5-1 * * * *", "*/0 * * * *"]
    examples += ["0 0 30 2 *", "0 0 31 4,6 *", "0 0 30 2 1", "0 3 * * MON", "0 0 29 2 *", "1 2 3"]
    for text in examples:
        assert _cron_allowed(text) == _accepted(check_cron, text), text

    @SETTINGS
    @given(st.from_regex(CRON, fullmatch=True))
    def allowed(text: str) -> None:
        assert _cron_allowed(text) == _accepted(check_cron, text), text

    parts = st.text("0123456789*/-,", min_size=1, max_size=5)

    @SETTINGS
    @given(
        st.text("0123456789*/-, \t@adilyhom", max_size=25)
        | st.builds(" ".join, st.lists(parts, min_size=5, max_size=6))
    )
    def anything(text: str) -> None:
        assert _cron_allowed(text) == _accepted(check_cron, text), text

    allowed()
    anything()


def test_moment_pattern_is_the_validator():
    from domain.values import MOMENT_PATTERN, parse_moment

    moment = re.compile(MOMENT_PATTERN)
    for text in [
        "2026-12-01T10:00:00Z",
        "2028-02-29T00:00:00+01:00",
        "2027-02-29T00:00:00Z",
        "2000-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2026-12-01T10:00:00",
        "2026-12-01T10:00:00.1234567Z",
        "0000-01-01T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-12-01 10:00:00Z",
    ]:
        assert bool(moment.match(text)) == _accepted(parse_moment, text), text

    @SETTINGS
    @given(st.from_regex(moment, fullmatch=True) | st.text("0123456789-:T.Z+", max_size=26))
    def same(text: str) -> None:
        assert bool(moment.match(text)) == _accepted(parse_moment, text), text

    same()
