"""Settings from the environment (SPEC §6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokensvc.config import ConfigError, load_settings


def test_defaults() -> None:
    s = load_settings({})
    assert s.database_url == "sqlite:///./tokensvc.db" and s.keys_dir == Path("./keys")
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert (s.default_ttl, s.max_ttl) == (3600, 86400)
    assert s.public_url is None and s.account_sid is None


def test_values_from_the_environment() -> None:
    s = load_settings({"TOKENSVC_DATABASE_URL": "postgresql+psycopg://u@h/db", "TOKENSVC_PORT": "9000",
                       "TOKENSVC_PUBLIC_URL": "https://chat.example.com/", "TOKENSVC_MAX_TTL": "600",
                       "TOKENSVC_DEFAULT_TTL": "60", "TOKENSVC_KEYS_DIR": "/etc/tokensvc/keys"})
    assert s.port == 9000 and s.public_url == "https://chat.example.com" and not s.is_sqlite
    assert (s.default_ttl, s.max_ttl) == (60, 600) and s.keys_dir == Path("/etc/tokensvc/keys")


@pytest.mark.parametrize("env", [
    {"TOKENSVC_PORT": "http"}, {"TOKENSVC_MAX_TTL": "0"}, {"TOKENSVC_DEFAULT_TTL": "100", "TOKENSVC_MAX_TTL": "10"},
    {"TOKENSVC_PUBLIC_URL": "chat.example.com"}, {"TOKENSVC_SQLITE_SYNCHRONOUS": "sometimes"},
])
def test_bad_values_are_refused_with_a_clear_error(env: dict) -> None:
    with pytest.raises(ConfigError):
        load_settings(env)


def test_served_app_freezes_startup_objects_and_collects_less_often(tmp_path: Path) -> None:
    """`tokensvc serve` builds each worker's app through cli.app_factory, which tunes the GC
    (bench/connect.py measured a third of a connect's CPU in collections without it)."""
    import subprocess
    import sys

    code = ("import gc; from tokensvc.cli import app_factory; app_factory(); "
            "print(gc.get_threshold()[0], gc.get_freeze_count())")
    env = {"PATH": "/usr/bin:/bin", "TOKENSVC_DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
           "TOKENSVC_KEYS_DIR": str(tmp_path / "keys")}
    subprocess.run([sys.executable, "-m", "tokensvc.cli", "db", "upgrade"], env=env, check=True,
                   capture_output=True)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    threshold, frozen = map(int, out.stdout.split())
    assert threshold == 7000
    assert frozen > 10_000  # the modules and the app's machinery
