"""Durations always carry a unit: a bare number once meant 30 seconds to someone who meant
30 days, and retention deleted their snapshot seconds later."""

from __future__ import annotations

import pytest

from tests.support.api import create_policy
from tests.support.cli import NO_SCHEDULER, Cli

API = "/api/v1"


@pytest.mark.parametrize("bare", [30, "30", 30.0])
def test_a_bare_number_is_refused_naming_the_field_and_the_units(client, bare):
    r = client.post(
        f"{API}/policies",
        json={"name": "n", "source": "demo", "storage": "local", "retention": {"expire_after": bare}},
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == "retention.expire_after"
    assert "has no unit" in body["error"] and "'30d'" in body["error"]
    assert client.get(f"{API}/policies").json()["items"] == []  # nothing half-written


def test_an_edit_is_refused_the_same_way_and_units_are_accepted(client):
    pid = create_policy(client, retention={"expire_after": "30d"})
    r = client.patch(f"{API}/policies/{pid}", json={"retention": {"expire_after": 7}})
    assert r.status_code == 422 and r.json()["field"] == "retention.expire_after"
    for text, seconds in (("12h", 43200), ("90m", 5400), ("2w", 1209600), ("45s", 45)):
        r = client.patch(f"{API}/policies/{pid}", json={"retention": {"expire_after": text}})
        assert r.status_code == 200, r.text
        assert client.get(f"{API}/policies/{pid}").json()["retention"]["expire_after_seconds"] == seconds


def test_the_cli_refuses_a_bare_number_and_keeps_an_expiry_it_does_not_change(make_config, capsys):
    cli = Cli(make_config(NO_SCHEDULER), capsys)
    create = ("policy", "create", "n", "--source", "demo", "--storage", "local")
    code, _, err = cli(*create, "--expire-after", "30")
    assert code == 2 and "has no unit" in err
    cli.ok(*create, "--expire-after", "3d")
    cli.ok("policy", "edit", "n", "--keep-last", "4")
    shown = cli.json("policy", "show", "n")
    assert shown["retention"] == {"keep_last": 4, "expire_after_seconds": 3 * 86400}
