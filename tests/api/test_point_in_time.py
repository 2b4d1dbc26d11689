"""Backup Records say whether a snapshot is its source at one moment, how, and for MongoDB
its cluster time, through the whole system: run, event, view, API."""

from __future__ import annotations

from collections.abc import Callable

import pymongo
from starlette.testclient import TestClient

from api.config import Config
from tests.support.api import completed_snapshot, create_policy


def test_backup_records_carry_the_snapshots_point_in_time(
    make_config: Callable[..., Config], client_for: Callable[[Config], TestClient], mongo_url: str
) -> None:
    with pymongo.MongoClient(mongo_url) as mongo:
        mongo.drop_database("pitapi")
        mongo.pitapi.orders.insert_many([{"_id": i} for i in range(50)])
    config = make_config(f'[sources.mongo]\nkind = "mongodb"\nurl = "{mongo_url}"\ndatabases = ["pitapi"]\n')
    client = client_for(config)

    files = completed_snapshot(client, create_policy(client, "files"))
    assert files["point_in_time"] == {
        "consistent": False,
        "how": "files are read one after another, each as it is when read",
    }
    mongo_snap = completed_snapshot(client, create_policy(client, "mongo", source="mongo"))
    assert mongo_snap["status"] == "completed", mongo_snap
    moment = mongo_snap["point_in_time"]
    assert moment["consistent"] is True and moment["how"].startswith("oplog")
    seconds, increment = moment["cluster_time"].split(".")
    assert seconds.isdigit() and increment.isdigit()
    host = pymongo.MongoClient(mongo_url).admin.command("hello")["me"]
    assert moment["read_from"] == host  # the member every read of the run went to
    listed = client.get("/api/v1/backups").json()["items"]
    assert {b["sub_name"]: b["point_in_time"]["consistent"] for b in listed} == {
        "files#1": False,
        "mongo#1": True,
    }
