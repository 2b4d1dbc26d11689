"""The operator CLI: every verb against the configured store, on SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from api.cli import display, main, parser, tables
from api.config import Config
from api.runtime import Runtime
from tests.support.cli import NO_SCHEDULER, Cli

MiB = 1_048_576


@pytest.fixture
def cli(make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(make_config(NO_SCHEDULER), capsys)


@pytest.fixture
def worker(cli: Cli) -> Iterator[Runtime]:
    """A worker in this process, on the same store, as `snapledger worker` would run."""
    runtime = Runtime.build(cli.config).start(worker=True)
    yield runtime
    runtime.close()


def _uuid(text: str) -> str:
    match = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text)
    assert match, text
    return match.group(0)


# ------------------------------------------------------------------ policies
def test_policy_lifecycle_by_name_and_id(cli: Cli) -> None:
    out = cli.ok(
        "policy", "create", "nightly", "--source", "demo", "--storage", "local",
        "--schedule", "0 3 * * *", "--timezone", "Europe/Lisbon",
        "--keep-last", "7", "--expire-after", "30d", "--exclude", "events", "--actor", "alice",
    )  # fmt: skip
    pid = _uuid(out)

    listed = cli.json("policy", "list")
    assert [p["name"] for p in listed] == ["nightly"] and listed[0]["id"] == pid
    table = cli.ok("policy", "list")
    assert table.splitlines()[0].split()[:3] == ["ID", "NAME", "STATUS"]
    assert "0 3 * * * (Europe/Lisbon)" in table and "keep 7, expire 30d" in table

    shown = cli.json("policy", "show", "NIGHTLY")  # names are case-insensitive, as claims are
    assert shown["id"] == pid and shown["created_by"] == "alice"
    assert shown["retention"] == {"keep_last": 7, "expire_after_seconds": 30 * 86400}
    assert shown["collections"] == {"include": [], "exclude": ["events"]}
    text = cli.ok("policy", "show", pid)
    assert re.search(r"^retention\s+keep 7, expire 30d$", text, re.M)
    assert re.search(r"^collections\s+all except events$", text, re.M)

    # An edit of one retention setting keeps the other; --name renames.
    cli.ok("policy", "edit", "nightly", "--keep-last", "3", "--name", "hourly", "--schedule", "@hourly")
    edited = cli.json("policy", "show", pid)
    assert edited["name"] == "hourly" and edited["schedule"] == "@hourly"
    assert edited["retention"] == {"keep_last": 3, "expire_after_seconds": 30 * 86400}
    cli.ok("policy", "edit", "hourly", "--expire-after", "none", "--exclude")
    cleared = cli.json("policy", "show", "hourly")
    assert cleared["retention"]["expire_after_seconds"] is None and cleared["collections"]["exclude"] == []
    assert "nothing changed" in cli.ok("policy", "edit", "hourly", "--keep-last", "3")

    cli.ok("policy", "stop", "hourly")
    assert cli.json("policy", "show", "hourly")["status"] == "stopped"

    cli.ok("policy", "delete", "hourly", "--keep-files")
    assert cli.json("policy", "list") == []
    assert "no policies" in cli.ok("policy", "list")
    assert [p["status"] for p in cli.json("policy", "list", "--all")] == ["deleted"]
    assert cli.json("policy", "show", pid)["status"] == "deleted"  # by id, still readable
    code, _, err = cli("policy", "show", "hourly")
    assert code == 2 and "policy 'hourly' not found" in err  # deleted: the name is free


def test_actor_is_recorded_on_every_event(cli: Cli) -> None:
    cli.ok("policy", "create", "p1", "--source", "demo", "--storage", "local", "--actor", "bob")
    cli.ok("policy", "stop", "p1")
    lines = cli.ok("events", "--policy", "p1", "--json").splitlines()
    events = [json.loads(line) for line in lines]
    actors = {e["type"]: e["actor"] for e in events}
    assert actors["PolicyCreated"] == "bob"
    assert actors["PolicyStopped"].startswith("cli:") and actors["PolicyStopped"] != "cli:"


def test_bad_input_exits_2_naming_the_field(cli: Cli) -> None:
    base = ["policy", "create", "p", "--source", "demo", "--storage", "local"]
    code, out, err = cli(*base, "--schedule", "61 * * * *")
    assert code == 2 and err.startswith("snapledger: error: ") and "schedule" in err and out == ""
    code, _, err = cli(*base, "--keep-last", "0")
    assert code == 2 and "retention.keep_last" in err
    code, _, err = cli(*base, "--timezone", "Mars/Olympus")
    assert code == 2 and "timezone" in err
    code, _, err = cli("policy", "create", "p", "--source", "nope", "--storage", "local")
    assert code == 2 and "source" in err and "nope" in err
    assert cli.json("policy", "list") == [], "nothing half-written"

    for verb in (["policy", "show"], ["policy", "stop"], ["snapshot", "take"], ["policy", "delete"]):
        code, _, err = cli(*verb, "no-such-policy")
        assert code == 2 and "no-such-policy" in err, verb
    code, _, err = cli("policy", "show", "00000000-0000-4000-8000-000000000000")
    assert code == 2
    code, _, err = cli("snapshot", "list", "--policy", "ghost")
    assert code == 2 and "ghost" in err
    code, _, err = cli("restore", "create", "ghost#1", "--target", "scratch")
    assert code == 2 and "ghost#1" in err
    cli.ok("policy", "create", "p", "--source", "demo", "--storage", "local")
    code, _, err = cli("policy", "create", "p", "--source", "demo", "--storage", "local")
    assert code == 2 and "name" in err
    code, _, err = cli("policy", "edit", "p")
    assert code == 2 and "nothing to change" in err
    with pytest.raises(SystemExit) as usage:  # argparse's own usage errors are exit 2 too
        cli("snapshot", "list", "--status", "sideways")
    assert usage.value.code == 2


def test_config_may_follow_the_verb(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    cli.ok("policy", "create", "p", "--source", "demo", "--storage", "local")
    capsys.readouterr()
    assert main(["policy", "list", "--json", "--config", cli.path]) == 0
    assert [p["name"] for p in json.loads(capsys.readouterr().out)] == ["p"]


# ----------------------------------------------------------- runs, waiting
def test_snapshot_restore_and_records_with_a_worker(cli: Cli, worker: Runtime) -> None:
    cli.ok("policy", "create", "nightly", "--source", "demo", "--storage", "local")

    code, out, err = cli("snapshot", "take", "nightly", "--wait")
    assert code == 0, err
    lines = out.strip().splitlines()
    sid = _uuid(lines[0])
    assert lines[0].startswith("snapshot nightly#1 requested")
    # (the demo run may end before the first look: the big run below checks progress lines)
    assert all(re.match(r"nightly#1 (requested|running)", line) for line in lines[1:-1]), out
    assert re.match(r"nightly#1 completed: 3,650 items, .* -> nightly-.*\.tar$", lines[-1]), out

    backups = cli.json("snapshot", "list", "--policy", "nightly")
    assert [(b["id"], b["status"], b["items"]) for b in backups] == [(sid, "completed", 3650)]
    table = cli.ok("snapshot", "list", "--status", "completed")
    assert "SUB NAME" in table and "nightly#1" in table and "KiB" in table and "ERROR" not in table
    assert cli.json("snapshot", "list", "--status", "failed") == []
    assert cli.ok("snapshot", "verify", sid).startswith("ok ")
    assert cli.ok("snapshot", "verify", "nightly#1").startswith("ok ")  # by task name, as restore takes it

    # By task name, some collections, a dry run: verified and reported, nothing written.
    code, out, err = cli(
        "restore",
        "create",
        "nightly#1",
        "--target",
        "scratch",
        "--collections",
        "orders",
        "--dry-run",
        "--wait",
    )
    assert code == 0, err
    assert "orders: 2600 of 2600 items ok" in out and "dry run completed" in out.splitlines()[-1]

    code, out, err = cli("restore", "create", sid, "--target", "scratch", "--wait")
    assert code == 0, err
    assert "completed and verified: 3,650 items" in out.splitlines()[-1]

    # The target is not empty now: a refusing restore fails, and --wait says so with exit 1.
    code, out, err = cli("restore", "create", sid, "--target", "scratch", "--existing", "fail", "--wait")
    assert code == 1 and "failed" in err and "not empty" in err, (out, err)

    restores = cli.json("restore", "list", "--policy", "nightly")
    assert [r["status"] for r in restores] == ["failed", "completed", "completed"]
    assert cli.json("restore", "list", "--status", "failed", "--limit", "1")[0]["target"] == "scratch"
    table = cli.ok("restore", "list")
    assert "ERROR" in table and "not empty" in table and "ok (3)" in table

    events = [json.loads(line) for line in cli.ok("events", "--policy", "nightly", "--json").splitlines()]
    types = [e["type"] for e in events]
    assert "SnapshotCompleted" in types and types[-1] == "RestoreFailed"
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    text = cli.ok("events", "--limit", "3")
    assert text.splitlines()[0].split()[:2] == ["POSITION", "TIME"] and len(text.splitlines()) == 4
    after = events[0]["position"]
    first = json.loads(cli.ok("events", "--after", str(after), "--limit", "1", "--json"))
    assert first["position"] > after

    code, out, err = cli("policy", "rebuild", "nightly", "--wait")
    assert code == 0, err
    assert "nightly#2 requested" in out and "nightly#2 completed" in out.splitlines()[-1]

    code, out, err = cli("policy", "delete", "nightly")
    assert code == 0 and "2 archive(s) removed" in out, err
    assert not list((cli.config.data_dir / "archives").rglob("*.tar"))
    assert {b["status"] for b in cli.json("snapshot", "list")} == {"deleted"}


@pytest.fixture
def big_cli(make_config: Callable[..., Config], big_source: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    extra = f'{NO_SCHEDULER}[sources.big]\nkind = "ndjson"\npath = "{big_source}"\n'
    return Cli(make_config(extra), capsys)


def test_non_tty_wait_prints_progress_lines_then_the_end(
    big_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(display, "LINE_SECONDS", 0.2)  # a fast machine still shows several lines
    big_cli.ok("policy", "create", "big", "--source", "big", "--storage", "local")
    runtime = Runtime.build(big_cli.config).start(worker=True)
    try:
        code, out, err = big_cli("snapshot", "take", "big", "--wait")
    finally:
        runtime.close()
    assert code == 0, err
    lines = out.strip().splitlines()
    assert "\r" not in out
    running = [line for line in lines if line.startswith("big#1 running")]
    assert running, out
    assert all(re.search(r"\d+\.\d% .* items .*/s  ETA ", line) for line in running), running
    assert re.match(r"big#1 completed: 40,000 items", lines[-1]), out


def test_waiting_hints_at_a_missing_worker_and_ctrl_c_leaves_the_run(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.ok("policy", "create", "lonely", "--source", "demo", "--storage", "local")
    monkeypatch.setattr(display, "NO_WORKER_HINT_SECONDS", 0.2)
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) > 4:
            raise KeyboardInterrupt
        display.time.sleep(0.1)

    monkeypatch.setattr(display, "_pause", pause)
    code, out, err = cli("snapshot", "take", "lonely", "--wait")
    assert code == 130
    assert "no worker seems to be running" in err and "snapledger worker" in err
    assert "stopped waiting" in err
    assert "lonely#1 requested: waiting for a worker" in out
    assert cli.json("snapshot", "list")[0]["status"] == "requested", "Ctrl-C stops the waiting, not the run"


def test_events_follow_prints_new_events_until_ctrl_c(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.ok("policy", "create", "first", "--source", "demo", "--storage", "local")
    writer = Runtime.build(cli.config)
    calls: list[int] = []

    def pause(seconds: float) -> None:
        calls.append(1)
        if len(calls) == 1:
            writer.app.create_policy({"name": "second", "source": "demo", "storage": "local"}, "carol")
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(display, "_pause", pause)
    try:
        code, out, _ = cli("events", "--follow", "--json")
    finally:
        writer.close()
    assert code == 130
    events = [json.loads(line) for line in out.splitlines()]
    created = [e["data"]["name"] for e in events if e["type"] == "PolicyCreated"]
    assert created == ["first", "second"]
    assert events[-1]["actor"] in ("carol", None)


# ---------------------------------------------------------------- rendering
def test_terminal_progress_line() -> None:
    line = display.render_progress(42.0, 1234, 50 * MiB, 10.0, width=20)
    assert line.startswith(" 42.0% [########------------]")
    assert "1,234 items" in line and "50.0 MiB" in line
    assert "5.0 MiB/s" in line  # rate
    assert "ETA 0:14" in line  # 10 s for 42% -> ~13.8 s left
    assert "ETA --:--" in display.render_progress(0.0, 0, 0, 0.0)
    assert "500 items/s" in display.render_progress(10.0, 1000, 0, 2.0)  # no archive bytes yet
    assert "ETA 1:00:00" in display.render_progress(50.0, 1, MiB, 3600.0)


def test_bar_display_redraws_one_line_in_place() -> None:
    out = io.StringIO()
    bar = display.BarDisplay("nightly#1", out)
    bar.update("requested", 0.0, 0, 0, 0.0)
    bar.update("running", 50.0, 100, 4 * MiB, 2.0)
    bar.update("running", 100.0, 200, 8 * MiB, 3.0)
    text = out.getvalue()
    assert text.count("\r") == 3 and "\n" not in text
    assert "nightly#1 requested: waiting for a worker" in text
    last = text.rsplit("\r", 1)[1]
    assert "100.0%" in last and "ETA 0:00" in last
    bar.clear()  # the completion line takes the bar's place
    assert out.getvalue()[len(text) :] == "\r" + " " * len(last.rstrip()) + "\r"


def test_human_units() -> None:
    assert tables.human_size(512) == "512 B"
    assert tables.human_size(1536) == "1.5 KiB"
    assert tables.human_size(3 * 1024 * MiB) == "3.0 GiB"
    assert tables.human_duration(0.42) == "0.4s"
    assert tables.human_duration(125) == "2m05s"
    assert tables.human_duration(7260) == "2h01m"


def test_snapshot_stop_delete_and_restore_stop_verbs(make_config, capsys):
    from api.cli import main

    config = make_config()
    path = str(config.data_dir.parent / "snapledger.toml")
    assert main(["--config", path, "policy", "create", "sv", "--source", "demo", "--storage", "local"]) == 0
    assert main(["--config", path, "snapshot", "take", "sv"]) == 0
    assert main(["--config", path, "snapshot", "stop", "sv#1"]) == 0  # queued: stops at once
    assert "stop requested" in capsys.readouterr().out
    assert main(["--config", path, "snapshot", "stop", "sv#1"]) == 2  # already stopped
    assert main(["--config", path, "snapshot", "delete", "sv#1"]) == 0
    assert main(["--config", path, "restore", "stop", "00000000-0000-4000-8000-000000000000"]) == 2


def test_the_live_bar_fits_the_terminal() -> None:
    """At 80 columns the line was 91 characters wide: it wrapped and every redraw left a
    line behind."""
    import io

    for columns in (80, 60, 40):
        out = io.StringIO()
        bar = display.BarDisplay("nightly-production-orders#1234", out, columns=columns)
        bar.update("running", 42.5, 123_456_789, 987 * 1024 * MiB, 3723.0)
        lines = out.getvalue().split("\r")
        assert max(len(line) for line in lines) < columns, (columns, lines)
        assert "%" in lines[-1]
    wide = io.StringIO()
    display.BarDisplay("n#1", wide, columns=200).update("running", 50.0, 10, MiB, 1.0)
    assert "[" + "#" * 12 + "-" * 12 + "]" in wide.getvalue()  # room: the full 24-cell bar


# ------------------------------------------------------------- conventions
def _verbs(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every leaf verb of the parser tree, with the words that reach it."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from _verbs(child, (*path, name))


def test_every_verb_takes_dash_o_json() -> None:
    """Scripts parse any verb's answer, mutations included (velero, pbm, restic do)."""
    verbs = dict(_verbs(parser()))
    assert ("snapshot", "take") in verbs and ("restore", "create") in verbs and ("policy", "create") in verbs
    long_running = {("serve",), ("worker",)}
    for path, verb in verbs.items():
        if path in long_running:
            continue
        flags = {s for a in verb._actions for s in a.option_strings}
        assert {"-o", "--output", "--json"} <= flags, path


def test_noun_verb_grouping() -> None:
    verbs = set(dict(_verbs(parser())))
    for noun, expected in (
        ("snapshot", {"list", "take", "stop", "delete", "verify"}),
        ("restore", {"list", "create", "stop"}),
        ("policy", {"create", "list", "show", "edit", "stop", "rebuild", "drill", "delete"}),
    ):
        assert {v for n, v, *_ in (p for p in verbs if len(p) == 2) if n == noun} == expected, noun
    listed = set(re.findall(r"^    (\S+)", parser().format_help(), re.M))
    assert {"snapshot", "restore", "policy", "events", "storage"} <= listed
    for earlier in ("backups", "restores", "stop-restore", "verify"):
        assert earlier not in listed, f"{earlier!r} is an earlier spelling: kept, not advertised"


def test_json_answers_of_mutations_are_the_api_answer_and_the_record(cli: Cli, worker: Runtime) -> None:
    created = cli.json("policy", "create", "nightly", "--source", "demo", "--storage", "local")
    assert created["record"]["name"] == "nightly" and created["id"] == created["record"]["id"]
    assert isinstance(created["position"], int)

    code, out, err = cli("snapshot", "take", "nightly", "--wait", "-o", "json")
    assert code == 0, err
    taken = json.loads(out)  # stdout holds one document: no progress lines, no completion line
    assert taken["record"]["sub_name"] == "nightly#1" and taken["record"]["status"] == "completed"
    assert taken["record"]["items"] == 3650

    verified = cli.json("snapshot", "verify", "nightly#1")
    assert verified["ok"] is True and verified["items"] == 3650 and verified["snapshot"] == "nightly#1"
    assert set(verified["collections"]) == {"customers", "orders", "products"}

    code, out, err = cli("restore", "create", "nightly#1", "--target", "scratch", "--wait", "-o", "json")
    assert code == 0, err
    restored = json.loads(out)
    assert restored["record"]["status"] == "completed" and restored["record"]["target"] == "scratch"
    code, out, err = cli(
        "restore", "create", "nightly#1", "--target", "scratch", "--existing", "fail", "--wait", "-o", "json"
    )
    assert code == 1 and "not empty" in err, (out, err)  # exit 1 and the reason, as in table output
    assert json.loads(out)["record"]["status"] == "failed"

    plan = cli.json("snapshot", "delete", "nightly#1", "--dry-run")
    assert plan["dry_run"] is True and plan["count"] == 1
    edited = cli.json("policy", "edit", "nightly", "--keep-last", "3")
    assert edited["record"]["retention"]["keep_last"] == 3
    rebuilt = cli.json("policy", "rebuild", "nightly")
    assert rebuilt["record"]["sub_name"] == "nightly#2" and rebuilt["snapshot_id"] == rebuilt["record"]["id"]
    stopped = cli.json("policy", "stop", "nightly")
    assert stopped["record"]["status"] == "stopped"
    assert cli.json("retention", "run", "--dry-run")["dry_run"] is True
    assert "rebuilt" in cli.json("projections", "rebuild", "policies")
    deleted = cli.json("policy", "delete", "nightly")
    assert deleted["record"]["status"] == "deleted" and deleted["archives_removed"] >= 1


def test_earlier_spellings_still_answer(cli: Cli, worker: Runtime) -> None:
    """Scripts written for the flat verbs keep working: same answers, same exit codes."""
    cli.ok("policy", "create", "old", "--source", "demo", "--storage", "local")
    code, _, err = cli("snapshot", "take", "old", "--wait")
    assert code == 0, err

    def ids(rows: object) -> list[str]:  # statuses move on: the worker runs what was asked
        assert isinstance(rows, list)
        return [r["id"] for r in rows]

    assert ids(cli.json("backups")) == ids(cli.json("snapshot", "list"))
    assert cli.ok("verify", "old#1").startswith("ok ")
    code, out, err = cli("restore", "old#1", "--target", "scratch", "--wait")
    assert code == 0 and "completed and verified" in out, err
    code, out, err = cli("--config", cli.path, "restore", "--target", "scratch", "old#1", "--dry-run")
    assert code == 0 and "requested" in out, err
    assert ids(cli.json("restores")) == ids(cli.json("restore", "list"))
    code, _, err = cli("stop-restore", "no-such-restore")
    assert code == 2 and "no-such-restore" in err


def test_earlier_restore_spelling_is_read_as_create() -> None:
    from api.cli.main import earlier_spelling

    assert earlier_spelling(["restore", "n#1", "--target", "t"]) == [
        "restore",
        "create",
        "n#1",
        "--target",
        "t",
    ]
    assert earlier_spelling(["--config", "x.toml", "restore", "n#1"]) == [
        "--config",
        "x.toml",
        "restore",
        "create",
        "n#1",
    ]
    for unchanged in (
        ["restore", "list"],
        ["restore", "stop", "r"],
        ["restore", "--help"],
        ["snapshot", "list"],
        ["policy", "show", "restore"],
    ):
        assert earlier_spelling(unchanged) == unchanged


def test_restore_stop_takes_the_task_name(cli: Cli) -> None:
    cli.ok("policy", "create", "sv", "--source", "demo", "--storage", "local")
    runtime = Runtime.build(cli.config).start(worker=True)
    try:
        code, _, err = cli("snapshot", "take", "sv", "--wait")
        assert code == 0, err
    finally:
        runtime.close()
    cli.ok("restore", "create", "sv#1", "--target", "scratch")  # no worker now: it stays queued
    stopped = cli.json("restore", "stop", "sv#1->scratch")
    assert stopped["record"]["sub_name"] == "sv#1->scratch" and stopped["record"]["status"] in (
        "stopped",
        "stopping",
    )


def test_shell_completion_through_the_installed_command(tmp_path: Path) -> None:
    """`eval "$(register-python-argcomplete snapledger)"` completes nouns, verbs and options."""
    script = Path(sys.executable).parent / "snapledger"
    assert script.exists(), "the README install puts snapledger beside python"

    def complete(line: str) -> set[str]:
        out = tmp_path / "completions"
        env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
               "_ARGCOMPLETE_IFS": "\n", "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}  # fmt: skip
        done = subprocess.run([str(script)], env=env, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return set(out.read_text().split())

    assert {"snapshot", "restore", "policy", "events"} <= complete("snapledger ")
    assert complete("snapledger snapshot ") - {"-h", "--help"} == {"list", "take", "stop", "delete", "verify"}
    assert {"--output", "--wait", "--actor"} <= complete("snapledger snapshot take --")
    assert complete("snapledger snapshot list -o ") == {"table", "json"}


def test_restore_to_a_moment_names_what_is_wrong(cli: Cli) -> None:
    cli.ok("policy", "create", "p", "--source", "demo", "--storage", "local")
    base = ["restore", "create", "p", "--target", "scratch"]
    code, _, err = cli(*base, "--to-time", "2026-12-01T10:00:00")
    assert code == 2 and "to_time has no offset" in err
    code, _, err = cli(*base, "--to-lsn", "16-B374D848")
    assert code == 2 and "to_lsn must be a WAL position" in err
    code, _, err = cli(*base, "--to-time", "2026-12-01T10:00:00Z")
    assert code == 2 and "policy 'p' has no snapshot with a capture window" in err
    code, _, err = cli(
        "restore", "create", "ghost", "--target", "scratch", "--to-time", "2026-12-01T10:00:00Z"
    )
    assert code == 2 and "ghost" in err
    with pytest.raises(SystemExit) as usage:
        cli(*base, "--to-time", "2026-12-01T10:00:00Z", "--to-lsn", "0/1")
    assert usage.value.code == 2
    assert cli.json("restore", "list") == [], "nothing half-written"
