"""Tokens, roles, actors and size limits over every mutating endpoint."""

from __future__ import annotations

import pytest

from api.cli import main
from tests.support.api import completed_snapshot

VIEWER = "viewer-token-0123456789abcdef"
OPERATOR = "operator-token-0123456789abcdef"
TOKENS = """
[[api.tokens]]
name = "grafana"
role = "viewer"
token_env = "SL_VIEWER_TOKEN"

[[api.tokens]]
name = "alice"
role = "operator"
token_env = "SL_OPERATOR_TOKEN"

[api]
max_body_bytes = 2048
"""


@pytest.fixture
def secured(make_config, client_for, monkeypatch):
    monkeypatch.setenv("SL_VIEWER_TOKEN", VIEWER)
    monkeypatch.setenv("SL_OPERATOR_TOKEN", OPERATOR)
    return client_for(make_config(extra=TOKENS))


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _mutations(client) -> list[tuple[str, str, dict | None]]:
    """Every mutating endpoint, with real ids so only auth can refuse them."""
    op = _auth(OPERATOR)
    pid = client.post(
        "/api/v1/policies", json={"name": "p", "source": "demo", "storage": "local"}, headers=op
    ).json()["id"]
    snap = completed_snapshot_with(client, pid, op)
    rid = client.post("/api/v1/restores", json={"snapshot_id": snap, "target": "scratch"}, headers=op).json()[
        "id"
    ]
    return [
        ("POST", "/api/v1/policies", {"name": "q", "source": "demo", "storage": "local"}),
        ("PATCH", f"/api/v1/policies/{pid}", {"schedule": "@daily"}),
        ("POST", f"/api/v1/policies/{pid}/snapshots", None),
        ("POST", f"/api/v1/policies/{pid}/stop", None),
        ("POST", f"/api/v1/policies/{pid}/rebuild", None),
        ("POST", f"/api/v1/backups/{snap}/stop", None),
        ("POST", "/api/v1/restores", {"snapshot_id": snap, "target": "scratch"}),
        ("POST", f"/api/v1/restores/{rid}/stop", None),
        ("DELETE", f"/api/v1/backups/{snap}", None),
        ("DELETE", f"/api/v1/policies/{pid}", None),
    ]


def completed_snapshot_with(client, pid: str, headers: dict) -> str:
    from tests.support.api import wait_for

    sid = client.post(f"/api/v1/policies/{pid}/snapshots", headers=headers).json()["id"]
    wait_for(_Authed(client, headers), f"/api/v1/backups/{sid}", lambda b: b.get("status") == "completed")
    return sid


class _Authed:
    """What wait_for needs of a client, with the token on every read."""

    def __init__(self, client, headers):
        self.client, self.headers = client, headers

    def get(self, path):
        return self.client.get(path, headers=self.headers)


def test_auth_matrix(secured):
    for method, path, body in _mutations(secured):
        for token, expected in ((None, 401), ("wrong-token-0123456789", 401), (VIEWER, 403)):
            r = secured.request(method, path, json=body, headers=_auth(token))
            assert r.status_code == expected, (method, path, token, r.text)
            assert r.json()["field"] == "Authorization"
            assert VIEWER not in r.text and OPERATOR not in r.text
        r = secured.request(method, path, json=body, headers=_auth(OPERATOR))
        assert r.status_code < 400 or r.status_code == 409, (method, path, r.text)
    r = secured.get("/api/v1/backups", headers=_auth(VIEWER))
    assert r.status_code == 200
    assert secured.get("/api/v1/backups").status_code == 401
    assert secured.get("/healthz").status_code == 200  # probes need no token


def test_token_name_is_the_actor(secured):
    headers = {**_auth(OPERATOR), "X-Snapledger-Actor": "mallory"}  # ignored when tokens are on
    r = secured.post(
        "/api/v1/policies", json={"name": "a", "source": "demo", "storage": "local"}, headers=headers
    )
    pid = r.json()["id"]
    entries = secured.get(f"/api/v1/policies/{pid}/events", headers=_auth(VIEWER)).json()["items"]
    assert entries[0]["actor"] == "alice"


def test_body_size_limit(secured):
    big = {"name": "x" * 5000, "source": "demo", "storage": "local"}
    r = secured.post("/api/v1/policies", json=big, headers=_auth(OPERATOR))
    assert r.status_code == 413 and r.json()["field"] == "body"


def test_open_api_without_tokens_on_loopback(client):
    completed_snapshot(
        client,
        client.post("/api/v1/policies", json={"name": "open", "source": "demo", "storage": "local"}).json()[
            "id"
        ],
    )


def test_serve_refuses_non_loopback_without_tokens(make_config, capsys):
    config = make_config()
    path = str(config.data_dir.parent / "snapledger.toml")
    assert main(["--config", path, "serve", "--host", "0.0.0.0"]) == 2
    assert "without API tokens" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text,needle",
    [
        ('[[api.tokens]]\nname = "a"\nrole = "admin"\ntoken_env = "X"', "role"),
        ('[[api.tokens]]\nname = "a"\nrole = "viewer"\ntoken = "plain"', "token_env"),
        ('[[api.tokens]]\nname = "a"\nrole = "viewer"\ntoken_env = "SL_UNSET_TOKEN_VAR"', "not set"),
    ],
)
def test_token_configuration_errors(tmp_path, text, needle):
    from api.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert needle in str(e.value)


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
def test_the_bearer_scheme_is_matched_whatever_its_case(secured, scheme):
    """RFC 7235: an auth scheme is case-insensitive; the token itself is not."""
    assert secured.get("/api/v1/policies", headers={"Authorization": f"{scheme} {VIEWER}"}).status_code == 200
    wrong = {"Authorization": f"{scheme} {VIEWER.upper()}"}
    assert secured.get("/api/v1/policies", headers=wrong).status_code == 401


def test_a_deleted_snapshots_download_is_gone(client):
    from tests.support.api import create_policy

    snap = completed_snapshot(client, create_policy(client))
    assert client.get(f"/api/v1/backups/{snap['id']}/download").status_code == 200
    assert client.delete(f"/api/v1/backups/{snap['id']}").status_code == 200
    r = client.get(f"/api/v1/backups/{snap['id']}/download")
    assert r.status_code == 404 and "deleted" in r.json()["error"]
