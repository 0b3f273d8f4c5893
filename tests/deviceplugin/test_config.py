"""Config: schema, types, precedence flags > env > file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubenpu.deviceplugin.config import (
    DevicePluginConfig,
    parse_config_text,
    resolve_config,
)
from kubenpu.errors import ConfigError


def test_defaults() -> None:
    config = resolve_config({}, {})
    assert config == DevicePluginConfig()
    assert config.kubelet_dir == "/var/lib/kubelet/device-plugins"
    assert config.resource == "aliyun.com/npu" and config.backend == "auto"


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    path = tmp_path / "dp.yaml"
    path.write_text(
        "version: v1\nbackend: devfs\nmock-devices: 2\nmetrics-port: 9100\n"
        "mounts: [/opt/a]\nsharing: true\n"
    )
    env = {"KUBENPU_DP_MOCK_DEVICES": "6", "KUBENPU_DP_BACKEND": "ascend", "NODE_NAME": "n7"}
    config = resolve_config({"backend": "mock"}, env, str(path))
    assert config.backend == "mock"  # flag
    assert config.mock_devices == 6  # env over file
    assert config.metrics_port == 9100 and config.mounts == ("/opt/a",)  # file
    assert config.sharing is True and config.node_name == "n7"
    assert config.as_dict()["mock-devices"] == 6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("backend: mock\n", "version must be 'v1', got None"),
        ("version: v2\n", "version must be 'v1', got 'v2'"),
        ("version: v1\nbogus: 1\n", "unknown key 'bogus'"),
        ("version: v1\nmock-devices: many\n", "mock-devices must be an integer"),
        ("version: v1\nsharing: 'yes'\n", "sharing must be true or false"),
        ("version: v1\nmounts: /a\n", "mounts must be a list of strings"),
        ("- a\n- b\n", "expected a mapping"),
        ("version: [v1\n", "not valid YAML"),
    ],
)
def test_config_text_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse_config_text(text, "dp.yaml")


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"backend": "gpu"}, {}, "backend: one of"),
        ({"resource": "npu"}, {}, "resource: an extended resource name"),
        ({"metrics-port": 70000}, {}, "metrics-port"),
        ({"mounts": ["relative/path"]}, {}, "mounts: mount 'relative/path'"),
        ({}, {"KUBENPU_DP_SHARING": "maybe"}, "env KUBENPU_DP_SHARING: sharing must be"),
        ({}, {"KUBENPU_DP_MOCK_DEVICES": "x"}, "mock-devices must be an integer"),
    ],
)
def test_resolve_errors(flags, env, message) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(flags, env)


def test_env_lists_and_bools() -> None:
    env = {"KUBENPU_DP_CONTROL_DEVICES": "/dev/a, /dev/b", "KUBENPU_DP_CDI": "true"}
    config = resolve_config({}, env)
    assert config.control_devices == ("/dev/a", "/dev/b") and config.cdi is True
