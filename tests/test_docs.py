"""Docs move with the code: every setting is in the README."""

from __future__ import annotations

from pathlib import Path

from web.settings import documented

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for variable, _help, _default in documented():
        assert f"`{variable}`" in readme, f"{variable} is not in the README"


def test_the_vendored_htmx_carries_its_version() -> None:
    vendor = ROOT / "web" / "static" / "vendor"
    assert (vendor / "htmx-4.0.1.min.js").exists()
    assert (vendor / "hx-sse-4.0.1.js").exists()
    base = (ROOT / "web" / "templates" / "base.html").read_text()
    assert "/static/vendor/htmx-4.0.1.min.js" in base and "hx-sse-4.0.1.js" in base
