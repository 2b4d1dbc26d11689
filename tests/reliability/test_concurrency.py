"""100 concurrent mutations on one policy from many clients, against a real server: every
answer is a success or a 409, and the final state is one a serial order explains."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx

from api.runtime import Runtime
from tests.support.servers import serving
from tests.support.tally import report
from tests.support.views import assert_views_equal_rebuild


def test_concurrent_mutations_on_one_policy(make_config, tmp_path):
    config = make_config()
    with serving(tmp_path / "snapledger.toml", tmp_path / "serve.log") as root:
        base = f"{root}/api/v1"
        pid = httpx.post(
            f"{base}/policies", json={"name": "hot", "source": "demo", "storage": "local"}
        ).json()["id"]
        rnd = random.Random(11)
        actions = [rnd.choice(["edit", "stop", "snapshot", "rebuild"]) for _ in range(100)]

        def act(i: int, action: str) -> int:
            headers = {"X-Snapledger-Actor": f"client-{i % 10}"}
            with httpx.Client(timeout=30) as c:
                if action == "edit":
                    r = c.patch(
                        f"{base}/policies/{pid}", json={"schedule": f"{i % 60} 3 * * *"}, headers=headers
                    )
                elif action == "stop":
                    r = c.post(f"{base}/policies/{pid}/stop", headers=headers)
                elif action == "snapshot":
                    r = c.post(f"{base}/policies/{pid}/snapshots", headers=headers)
                else:
                    r = c.post(f"{base}/policies/{pid}/rebuild", headers=headers)
            assert r.status_code < 300 or r.status_code == 409, (action, r.status_code, r.text)
            if r.status_code == 409:
                assert r.json()["error"]
                return 499 if "changed while" in r.json()["error"] else 409  # lost every retry
            return r.status_code

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(act, range(100), actions))
        # 409 either because the state forbids it (stop of a stopped policy) or because the
        # command lost every retry to other writers (499 here); both leave nothing half-done.
        assert sum(c < 300 for c in codes) >= 30, codes
        ok = sum(c < 300 for c in codes)
        report(
            f"concurrency: requests={len(codes)} 2xx={ok} 409={len(codes) - ok} 5xx=0"
        )  # act() fails on any
    assert "Traceback" not in (tmp_path / "serve.log").read_text()

    # The final state is what replaying the stream in order gives, and views equal a rebuild.
    runtime = Runtime.build(config)
    try:
        runtime.runner.catch_up()
        policy = runtime.app.get_policy(pid)
        row = runtime.views.query("SELECT * FROM policies WHERE id = %(p)s", {"p": pid})[0]
        assert (row["status"], row["schedule"], row["snapshots_count"]) == (
            policy.status,
            policy.schedule,
            len(policy.snapshot_ids),
        )
        sequences = [runtime.app.get_snapshot(s).sequence for s in policy.snapshot_ids]
        assert sequences == list(range(1, len(sequences) + 1))  # numbered without gaps or repeats
        assert_views_equal_rebuild(runtime)
    finally:
        runtime.views.close()
        runtime.app.close()
