"""Regenerates the bundled demo dataset (deterministic, so the files never drift).

Run: python -m transfer.sources.demo_data.generate
"""

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
FIRST = ["Ada", "Grace", "Linus", "Barbara", "Edsger", "Donald", "Frances", "Ken", "Radia", "Tim"]
LAST = ["Lovelace", "Hopper", "Torvalds", "Liskov", "Dijkstra", "Knuth", "Allen", "Thompson"]
CITIES = ["Lisbon", "Oslo", "Nairobi", "Lima", "Osaka", "Quebec", "Tallinn", "Perth", "Zürich"]
WORDS = ["steel", "oak", "blue", "compact", "solar", "quiet", "rapid", "modular", "classic"]


def _write(name: str, docs: list[dict[str, Any]]) -> None:
    with open(HERE / f"{name}.ndjson", "w", encoding="utf-8", newline="\n") as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")


def main() -> None:
    rnd = random.Random(20261125)
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    customers = [
        {
            "_id": {"$oid": f"{0x6560000000000000000000 + i:024x}"},
            "name": f"{rnd.choice(FIRST)} {rnd.choice(LAST)}",
            "email": f"customer{i}@example.com",
            "city": rnd.choice(CITIES),
            "since": {"$date": (epoch - timedelta(days=rnd.randint(0, 2000))).isoformat()},
            "vip": rnd.random() < 0.1,
        }
        for i in range(800)
    ]
    products = [
        {
            "_id": f"SKU-{i:05d}",
            "title": f"{rnd.choice(WORDS)} {rnd.choice(WORDS)} widget",
            "price": {"$numberDecimal": f"{rnd.randint(100, 99999) / 100:.2f}"},
            "tags": rnd.sample(WORDS, 3),
            "stock": rnd.randint(0, 500),
        }
        for i in range(250)
    ]
    orders = []
    for i in range(2600):
        lines = [
            {"sku": f"SKU-{rnd.randrange(250):05d}", "qty": rnd.randint(1, 5)}
            for _ in range(rnd.randint(1, 4))
        ]
        orders.append(
            {
                "_id": i + 1,
                "customer": customers[rnd.randrange(800)]["_id"],
                "placed": {"$date": (epoch + timedelta(minutes=rnd.randint(0, 400000))).isoformat()},
                "lines": lines,
                "status": rnd.choice(["new", "paid", "shipped", "delivered", "returned"]),
            }
        )
    _write("customers", customers)
    _write("products", products)
    _write("orders", orders)


if __name__ == "__main__":
    main()
