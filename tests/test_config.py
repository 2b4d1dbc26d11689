"""Bad configuration stops startup with a message naming the setting (CLI exit code 2)."""

from __future__ import annotations

import pytest

from api.cli import main
from api.config import ConfigError, load_config


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text,needle",
    [
        ('[database]\nurl = "mysql://x/y"', "scheme must be sqlite or postgresql"),
        ('[database]\nurl = "postgresql://u:pw@h/db"', "must not contain a password"),
        ('[database]\nurl = "postgresql://u@h/"', "names no database"),
        ('[database]\nurl = "postgresql://u@h/db?schema=a;b"', "schema"),
        ('[database]\nurl = "sqlite://relative.db"', "sqlite:///"),
        (
            '[database]\nurl = "postgresql://u@h/db"\npassword_env = "NOPE_NOT_SET_X"',
            "NOPE_NOT_SET_X is not set",
        ),
        ('[sources.a]\npath = "/x"\npassword_env = "NOPE_NOT_SET_Y"', "sources.a.password_env"),
        ('[sources.a]\nkind = "oracle"\npath = "/x"', "sources.a.kind"),
        ('[sources.a]\nkind = "ndjson"', "sources.a.path"),
        ('[storages.s]\nurl = "ftp://x"', "storages.s.url"),
        ('[storages.s]\nurl = "s3://"', "names no bucket"),
        ('[storages.s]\nurl = "s3://b/p"\nendpoint_url = "localhost:9000"', "endpoint_url"),
        ('[api]\nport = "eighty"', "must be numbers"),
        ("[api]\npresign_seconds = 0", "presign_seconds"),
        ("this is = not toml [", "c.toml"),
    ],
)
def test_bad_configuration(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=None) as e:
        load_config(_write(tmp_path, text), env={})
    assert needle in str(e.value)


def test_missing_file_and_cli_exit_code(tmp_path, capsys):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", env={})
    code = main(["--config", _write(tmp_path, '[database]\nurl = "mysql://x/y"'), "projections", "rebuild"])
    assert code == 2
    assert "database.url" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["serve", "--port", "99999"])
    assert e.value.code == 2


def test_s3_storage_without_credentials_fails_at_startup(tmp_path, monkeypatch):
    from api.runtime import Runtime

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    config = load_config(
        _write(tmp_path, '[storages.s]\nurl = "s3://bucket/p"\nregion = "us-east-1"'), env={}
    )
    with pytest.raises(ConfigError, match="no AWS credentials"):
        Runtime.build(config)


def test_defaults(tmp_path):
    config = load_config(None, env={"SNAPLEDGER_DATA_DIR": str(tmp_path / "d")})
    assert config.database.kind == "sqlite" and config.database.path == tmp_path / "d" / "events.db"
    assert set(config.sources) == {"demo"} and set(config.targets) == {"scratch"}
    assert config.storages["local"].path == tmp_path / "d" / "archives"
    assert (config.host, config.port) == ("127.0.0.1", 8000)
