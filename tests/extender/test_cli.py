"""``kubenpu scheduler`` refuses bad settings with one line and status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

KUBENPU = str(Path(sys.executable).parent / "kubenpu")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "nope"], "unknown policy 'nope'"),
        (["--tls-cert", "/x.crt"], "--tls-cert and --tls-key go together"),
        ([], "--kubeconfig /nonexistent:"),
    ],
)
def test_bad_settings_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        [KUBENPU, "scheduler", "--kubeconfig", "/nonexistent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
