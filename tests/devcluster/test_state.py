"""A dev cluster's state file: a broken one gets one clear line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubenpu.cli.main import build_app
from kubenpu.devcluster.cluster import STATE_VERSION, DevCluster
from kubenpu.errors import ConfigError


def test_no_state_file_is_no_cluster(tmp_path: Path) -> None:
    assert DevCluster.load(tmp_path) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not a dev cluster's state"),
        ("[]", "state version None"),
        ('{"version": 999}', "state version 999"),
        (f'{{"version": {STATE_VERSION}}}', "incomplete dev cluster state"),
        (f'{{"version": {STATE_VERSION}, "ports": [1]}}', "incomplete dev cluster state"),
    ],
)
def test_broken_state_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "state.json").write_text(text)
    with pytest.raises(ConfigError, match=message):
        DevCluster.load(tmp_path)


@pytest.mark.parametrize("command", ["status", "down", "restart kube-apiserver"])
def test_cli_reports_broken_state_in_one_line(tmp_path: Path, command: str) -> None:
    (tmp_path / "state.json").write_text("{")
    result = CliRunner().invoke(
        build_app("dev-cluster"), ["dev-cluster", *command.split(), "--state-dir", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "not a dev cluster's state" in result.output
