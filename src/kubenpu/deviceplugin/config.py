"""The device plugin's settings: one versioned schema, read from flags, env and a file.

Precedence, highest first: command-line flags, environment (``KUBENPU_DP_<KEY>``, key
upper-cased with ``-`` as ``_``; ``NODE_NAME`` for ``node-name``), the YAML file given by
``--config``, then the defaults below. The file has the same keys as the flags::

    version: v1
    backend: mock
    mock-devices: 4

Unknown keys and unknown versions are rejected with the key named. Parsing a stream
(:func:`parse_config_text`) is kept apart from reading a file (:func:`load_config_file`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from kubenpu.deviceplugin.devices import MountSpec
from kubenpu.deviceplugin.protocol import DEFAULT_KUBELET_DIR, is_extended_resource_name
from kubenpu.errors import ConfigError
from kubenpu.names import (
    ENV_DEVICE_PLUGIN_PREFIX,
    ENV_NODE_NAME,
    RESOURCE_NPU,
    RESOURCE_NPU_CORE,
    RESOURCE_NPU_MEM,
)

#: The only schema version this release reads.
SCHEMA_VERSION = "v1"
BACKEND_CHOICES = ("auto", "mock", "devfs", "nvml", "ascend")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class DevicePluginConfig:
    """Resolved settings; attribute ``foo_bar`` is key ``foo-bar`` / flag ``--foo-bar``."""

    kubelet_dir: str = DEFAULT_KUBELET_DIR
    backend: str = "auto"
    resource: str = RESOURCE_NPU
    sharing: bool = False
    core_resource: str = RESOURCE_NPU_CORE
    memory_resource: bool = False
    mem_resource: str = RESOURCE_NPU_MEM
    node_name: str = ""
    kubeconfig: str = ""
    mock_devices: int = 4
    mock_health_dir: str = ""
    mock_dev_dir: str = ""
    mock_numa_nodes: int = 2
    mock_memory_gib: int = 16
    devfs_glob: str = "/dev/alinpu*"
    devfs_memory_gib: int = 0
    group_size: int = 0
    control_devices: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ()
    env_var: str = ""
    cdi: bool = False
    cdi_kind: str = "kubenpu.io/npu"
    metrics_port: int = 0
    metrics_address: str = "0.0.0.0"
    health_interval: float = 0.5
    log_level: str = "info"

    def as_dict(self) -> dict[str, Any]:
        """The settings under their file keys (for the resolved-config log line)."""
        return {key_of(f.name): getattr(self, f.name) for f in fields(self)}


def key_of(attr: str) -> str:
    """File key / flag name of a config attribute."""
    return attr.replace("_", "-")


def env_name(key: str) -> str:
    """Environment variable of a config key."""
    return ENV_DEVICE_PLUGIN_PREFIX + key.upper().replace("-", "_")


_TYPES: dict[str, type] = {
    key_of(f.name): {"str": str, "bool": bool, "int": int, "float": float}.get(str(f.type), tuple)
    for f in fields(DevicePluginConfig)
}
KEYS = tuple(_TYPES)


def _coerce(key: str, value: Any, source: str) -> Any:
    """Check a file/flag value against the key's type; env strings are converted."""
    kind = _TYPES[key]
    from_env = isinstance(value, str) and source.startswith("env")
    try:
        if kind is bool:
            if from_env:
                lowered = value.lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return lowered in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind is int:
            if from_env:
                return int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError
            return value
        if kind is float:
            if from_env:
                return float(value)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError
            return float(value)
        if kind is tuple:
            if from_env:
                return tuple(v.strip() for v in value.split(",") if v.strip())
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ValueError
            return tuple(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except ValueError:
        want = {bool: "true or false", int: "an integer", float: "a number"}.get(
            kind, "a list of strings" if kind is tuple else "a string"
        )
        raise ConfigError(f"{source}: {key} must be {want}, got {value!r}") from None


def parse_config_text(text: str, source: str = "<config>") -> dict[str, Any]:
    """Parse a YAML config document into ``{key: value}`` for the keys it sets."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    version = data.pop("version", None)
    if version != SCHEMA_VERSION:
        raise ConfigError(
            f"{source}: version must be {SCHEMA_VERSION!r}, got {version!r} "
            "(add 'version: v1' at the top)"
        )
    settings = {}
    for key, value in data.items():
        if key not in _TYPES:
            raise ConfigError(f"{source}: unknown key {key!r}; known keys: {', '.join(KEYS)}")
        settings[key] = _coerce(key, value, source)
    return settings


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and parse a config file; an unreadable file is a ConfigError naming it."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    return parse_config_text(text, source=str(path))


def env_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings present in the environment (``KUBENPU_DP_*`` and ``NODE_NAME``)."""
    settings = {}
    if environ.get(ENV_NODE_NAME):
        settings["node-name"] = environ[ENV_NODE_NAME]
    for key in KEYS:
        name = env_name(key)
        if name in environ:
            settings[key] = _coerce(key, environ[name], f"env {name}")
    return settings


def _validate(config: DevicePluginConfig) -> None:
    def need(ok: bool, key: str, problem: str, value: Any) -> None:
        if not ok:
            raise ConfigError(f"{key}: {problem}, got {value!r}")

    need(config.backend in BACKEND_CHOICES, "backend", f"one of {BACKEND_CHOICES}", config.backend)
    for key in ("resource", "core-resource", "mem-resource"):
        value = getattr(config, key.replace("-", "_"))
        need(is_extended_resource_name(value), key, "an extended resource name", value)
    need(config.mock_devices >= 0, "mock-devices", "a count >= 0", config.mock_devices)
    need(config.mock_numa_nodes >= 1, "mock-numa-nodes", ">= 1", config.mock_numa_nodes)
    need(config.mock_memory_gib >= 1, "mock-memory-gib", ">= 1", config.mock_memory_gib)
    need(config.group_size >= 0, "group-size", ">= 0", config.group_size)
    need(0 <= config.metrics_port <= 65535, "metrics-port", "0..65535", config.metrics_port)
    need(bool(config.metrics_address), "metrics-address", "an address", config.metrics_address)
    need(
        0 < config.health_interval <= 1.0,
        "health-interval",
        "seconds in (0, 1] (health changes must reach the kubelet within 1 s)",
        config.health_interval,
    )
    need(config.log_level in LOG_LEVELS, "log-level", f"one of {LOG_LEVELS}", config.log_level)
    need(bool(config.kubelet_dir), "kubelet-dir", "a directory", config.kubelet_dir)
    need(
        bool(config.node_name) or not config.sharing,
        "node-name",
        "needed with sharing to find the node's pods (set NODE_NAME)",
        config.node_name,
    )
    need("/" in config.cdi_kind, "cdi-kind", "vendor/class", config.cdi_kind)
    for mount in config.mounts:
        try:
            MountSpec.parse(mount)
        except ValueError as err:
            raise ConfigError(f"mounts: {err}") from None
    for path in config.control_devices:
        need(path.startswith("/"), "control-devices", "absolute paths", path)


def resolve_config(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: str | None = None,
) -> DevicePluginConfig:
    """Merge flags > env > file > defaults into a validated config.

    ``flags`` holds only the flags given on the command line, under their keys.
    """
    merged: dict[str, Any] = {}
    if config_file:
        merged.update(load_config_file(config_file))
    merged.update(env_settings(environ))
    for key, value in flags.items():
        if key not in _TYPES:
            raise ConfigError(f"unknown setting {key!r}")
        merged[key] = tuple(value) if _TYPES[key] is tuple else value
    config = DevicePluginConfig(**{k.replace("-", "_"): v for k, v in merged.items()})
    _validate(config)
    return config
