"""What every `gateway` command shares (gateway/cli/common.py): a bad config exits 2 naming the key, a database
without the schema says to run `gateway migrate`."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli


def test_cli_bad_config_exits_2(db_url: str, tmp_path: Path) -> None:
    """A broken config file stops the command with exit code 2 and the key's name."""
    config = tmp_path / "gateway.toml"
    config.write_text("port = 'x'\n")
    result = run_cli(["migrate", "--config", str(config)], db_url)
    assert result.returncode == 2
    assert "port" in result.stderr


def test_cli_unmigrated_database_says_so(tmp_path: Path) -> None:
    """Commands on an empty database tell the operator to run `gateway migrate`."""
    result = run_cli(["orgs", "create", "--slug", "x", "--name", "x"], f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    assert result.returncode == 1
    assert "gateway migrate" in result.stderr
