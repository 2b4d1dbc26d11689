"""Bad configuration stops startup with a message naming the setting (CLI exit code 2)."""

from __future__ import annotations

import pytest

from api.cli import main
from api.config import ConfigError, load_config
from transfer.sources.registry import build_source, build_target


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
        (
            '[sources.a]\npath = "/x"\npassword_env = "NOPE_NOT_SET_Y"',
            "password_env is not a setting of a ndjson",
        ),
        (
            '[sources.a]\nkind = "postgresql"\nurl = "postgresql://u@h/db"\npassword_env = "NOPE_Y"',
            "NOPE_Y is not set",
        ),
        ('[sources.a]\nkind = "oracle"\npath = "/x"', "sources.a.kind"),
        ('[sources.a]\nkind = "ndjson"', "sources.a.path"),
        ('[storages.s]\nurl = "ftp://x"', "storages.s.url"),
        ('[storages.s]\nurl = "s3://"', "names no bucket"),
        ('[storages.s]\nurl = "s3://b/p"\nendpoint_url = "localhost:9000"', "endpoint_url"),
        ('[api]\nport = "eighty"', "api.port must be an integer (got 'eighty')"),
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


@pytest.mark.parametrize(
    "text,needle",
    [
        # each typo the issue saw silently accepted
        ('[storages.s]\nurl = "/x"\nencryption_key_id = "k"\nencryptoin_key_env = "K"',
         "storages.s.encryptoin_key_env is not a setting (did you mean encryption_key_env?)"),
        ('[[api.token]]\nname = "a"\nrole = "operator"\ntoken_env = "T"',
         "api.token is not a setting (did you mean tokens?)"),
        ('[[api.tokens]]\nname = "a"\nrole = "operator"\ntoken = "secret-secret-secret"',
         "api.tokens[0].token: put keys in environment variables and name them in token_env"),
        ("[worker]\nlease_second = 30", "worker.lease_second is not a setting (did you mean lease_seconds?)"),
        ('[targets.t]\nkind = "postgresql"\nurl = "postgresql://u@h/db"\nkeep_owner = true',
         "did you mean keep_owners?"),
        ('[databse]\nurl = "sqlite:///x.db"', "databse is not a setting (did you mean database?)"),
        ("[api]\nport = 0", "api.port must be from 1 to 65535 (got 0)"),
        ("[api]\nport = 70000", "api.port must be from 1 to 65535"),
        ("[worker]\nconcurrency = 0", "worker.concurrency must be from 1 to 64"),
        ('[storages.s]\nurl = "s3://b/p"\npart_size_mb = 4', "part_size_mb must be from 5 to 5120"),
        ("[worker]\nscheduler = 1", "worker.scheduler must be true or false"),
        ('[sources.m]\nkind = "mongodb"\nurl = "mongodb://h"\nschemas = ["x"]',
         "schemas is not a setting of a mongodb"),
        ('[sources.p]\nkind = "postgresql"\nurl = "postgresql://u@h/db?sslmod=require"', "sources.p.url"),
        ('[database]\nurl = "postgresql://u@h/db?sslmod=require"', "database.url"),
        ('[sources.m]\nkind = "mongodb"\nurl = "mongodb://h"\nread_preference = "secundary"',
         "sources.m.read_preference"),
        ('[targets.m]\nkind = "mongodb"\nurl = "mongodb://h"\nread_preference = "primary"',
         "targets.m.read_preference is not a setting"),
        ('[targets.m]\nkind = "mongodb"\nurl = "mongodb://h"\nusers_and_roles = "yes"',
         "targets.m.users_and_roles"),
        ('[sources.p]\nkind = "postgresql"\nurl = "postgresql://u@h/db"\nusers_and_roles = true',
         "users_and_roles is not a setting of a postgresql source"),
    ],
)  # fmt: skip
def test_typos_and_out_of_range_settings_are_refused_naming_them(tmp_path, text, needle):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, text), env={"K": "x", "T": "t" * 20})
    assert needle in str(e.value)


def test_snapledger_port_is_range_checked(tmp_path):
    for bad in ("0", "65536", "eighty", "-1"):
        with pytest.raises(ConfigError, match="SNAPLEDGER_PORT must be a port from 1 to 65535"):
            load_config(_write(tmp_path, ""), env={"SNAPLEDGER_PORT": bad})
    assert load_config(_write(tmp_path, ""), env={"SNAPLEDGER_PORT": "8123"}).port == 8123


def test_libpq_url_parameters_of_sources_and_targets_are_kept(tmp_path):
    from transfer.sources.postgres.connection import conninfo
    from transfer.sources.registry import build_source, build_target

    url = "postgresql://backup@db:5433/crm?sslmode=verify-full&sslrootcert=/etc/ca.pem&target_session_attrs=read-write"
    config = load_config(
        _write(
            tmp_path,
            f'[sources.p]\nkind = "postgresql"\nurl = "{url}"\n'
            f'[targets.t]\nkind = "postgresql"\nurl = "{url}"\n',
        ),
        env={},
    )
    for endpoint in (build_source(config.sources["p"]), build_target(config.targets["t"])):
        info = conninfo(endpoint.url, "pw")
        for part in ("sslmode=verify-full", "sslrootcert=/etc/ca.pem", "target_session_attrs=read-write",
                     "host=db", "port=5433", "dbname=crm", "user=backup"):  # fmt: skip
            assert part in info, info


def test_the_event_stores_url_keeps_its_libpq_parameters(tmp_path, pg_reason):
    """sslmode, application_name and the rest reach the event store's pool and the views."""
    if pg_reason:
        pytest.skip(pg_reason)
    import psycopg

    from api.runtime import Runtime
    from tests.support.api import PG_URL

    schema = "cfg_params_" + tmp_path.name[-8:].replace("-", "_")
    url = f"{PG_URL}?schema={schema}&application_name=sl-params-test&sslmode=disable"
    config = load_config(_write(tmp_path, f'[database]\nurl = "{url}"\n'), env={})
    assert config.database.parameters == {"application_name": "sl-params-test", "sslmode": "disable"}
    assert "application_name=sl-params-test" in config.database.conninfo()
    runtime = Runtime.build(config)
    try:
        runtime.app.create_policy({"name": "p", "source": "demo", "storage": "local"}, "t")
        with psycopg.connect(config.database.conninfo()) as c:
            names = {r[0] for r in c.execute("SELECT application_name FROM pg_stat_activity")}
        assert "sl-params-test" in names
        assert (
            runtime.app.recorder.datastore.pool.kwargs["sslmode"] == "disable"
        )  # the event store's own pool
    finally:
        runtime.views.close()
        runtime.app.close()
        with psycopg.connect(config.database.conninfo(), autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_a_mongodb_source_reads_from_a_secondary_unless_told(tmp_path):
    default = '[sources.m]\nkind = "mongodb"\nurl = "mongodb://h"\n'
    assert (
        load_config(_write(tmp_path, default)).sources["m"].settings["read_preference"]
        == "secondaryPreferred"
    )
    chosen = default + 'read_preference = "primary"\n'
    assert load_config(_write(tmp_path, chosen)).sources["m"].settings["read_preference"] == "primary"


def test_users_and_roles_are_moved_only_where_both_ends_ask(tmp_path):
    text = '[sources.m]\nkind = "mongodb"\nurl = "mongodb://h"\n[targets.t]\nkind = "mongodb"\nurl = "mongodb://h"\n'
    config = load_config(_write(tmp_path, text))
    assert config.sources["m"].settings["users_and_roles"] is False
    assert config.targets["t"].settings["users_and_roles"] is False
    asked = text.replace('url = "mongodb://h"\n', 'url = "mongodb://h"\nusers_and_roles = true\n')
    config = load_config(_write(tmp_path, asked))
    assert build_source(config.sources["m"]).users_and_roles is True
    assert build_target(config.targets["t"]).users_and_roles is True
