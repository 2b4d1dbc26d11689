"""The console's ES modules: each type-checked (`// @ts-check`, strict), loaded as modules
with no build step, and free of import circles."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "api" / "static"
TSC = STATIC.parents[1] / "node_modules" / ".bin" / "tsc"


def _imports(module: Path) -> set[str]:
    return set(re.findall(r'^import .* from "\./(\w+)\.js";$', module.read_text(), re.M))


def test_every_module_is_type_checked_and_the_page_loads_them_as_modules() -> None:
    modules = sorted(STATIC.glob("js/*.js"))
    assert len(modules) >= 10
    for module in modules:
        assert module.read_text().startswith("// @ts-check\n"), module.name
    html = (STATIC / "index.html").read_text()
    assert '<script type="module" src="js/main.js"></script>' in html
    assert not (STATIC / "app.js").exists()


def test_no_module_imports_itself_back() -> None:
    graph = {m.stem: _imports(m) for m in STATIC.glob("js/*.js")}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = [m for m in graph if reaches(m, m, set())]
    assert circles == [], f"import circles through {circles}"


def test_tsc_finds_no_type_error() -> None:
    if not TSC.exists():
        if os.environ.get("CI"):
            pytest.fail("TypeScript is missing: `npm ci` installs it (.ci/run does)")
        pytest.skip("TypeScript is not installed here (`npm ci`); CI runs this check")
    done = subprocess.run(
        [str(TSC), "-p", str(STATIC / "jsconfig.json")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
