"""Settings that cannot work are refused at start: one sentence, a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def start(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SALA_")}
    environ.update({"SALA_DATABASE_URL": f"sqlite:///{tmp_path / 'sala.db'}", **env})
    return subprocess.run(
        [sys.executable, "-m", "web", "--port", "0", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        ((), {"SALA_BROKER_URL": "postgresql://127.0.0.1/test", "SALA_SECRET_KEY": "k"}, "SQLite"),
        (
            (),
            {
                "SALA_BROKER_URL": "postgresql://127.0.0.1/test",
                "SALA_DATABASE_URL": "postgresql://127.0.0.1/test",
            },
            "SALA_SECRET_KEY must be set",
        ),
        (("--workers", "2"), {}, "--workers above 1 needs SALA_BROKER_URL"),
        ((), {"SALA_PUBLIC_URL": "chat.example.org"}, "SALA_PUBLIC_URL must be an http(s)"),
        ((), {"SALA_COOKIE_SECURE": "maybe"}, "SALA_COOKIE_SECURE must be a bool"),
        ((), {"SALA_HEARTBEAT_SECONDS": "soon"}, "SALA_HEARTBEAT_SECONDS must be a float"),
    ],
)
def test_impossible_settings_are_refused_in_words(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], words: str
) -> None:
    result = start(tmp_path, *args, **env)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
