"""Docs move with the code: every setting is in the README."""

from __future__ import annotations

import re
from pathlib import Path

from web.settings import documented

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for variable, _help, default in documented():
        assert f"`{variable}`" in readme, f"{variable} is not in the README"
        row = re.search(rf"^\| `{variable}` \| ([^|]+) \|", readme, re.MULTILINE)
        assert row is not None, f"{variable} has no row in the settings table"
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            shown = f"{default:g}"
            assert row.group(1).strip() == f"`{shown}`", f"{variable}: README says {row.group(1)}"


def test_the_vendored_htmx_carries_its_version() -> None:
    vendor = ROOT / "web" / "static" / "vendor"
    assert (vendor / "htmx-4.0.1.min.js").exists()
    assert (vendor / "hx-sse-4.0.1.js").exists()
    base = (ROOT / "web" / "templates" / "base.html").read_text()
    assert "/static/vendor/htmx-4.0.1.min.js" in base and "hx-sse-4.0.1.js" in base
