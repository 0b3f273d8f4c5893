"""Fixtures for the device plugin tests: short socket dirs, a kubelet peer, a daemon."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubenpu.devcluster.kubelet import KubeletPeer
from kubenpu.deviceplugin.config import resolve_config
from kubenpu.deviceplugin.daemon import DevicePluginDaemon
from kubenpu.deviceplugin.sharing import PodLookup


@pytest.fixture
def short_dir() -> Iterator[Callable[[], Path]]:
    """Make directories under /tmp: unix socket paths must stay short (about 100 chars)."""
    made: list[str] = []

    def make() -> Path:
        made.append(tempfile.mkdtemp(prefix="dp", dir="/tmp"))
        return Path(made[-1])

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def kubelet_dir(short_dir: Callable[[], Path]) -> Path:
    return short_dir()


@pytest.fixture
def health_dir(short_dir: Callable[[], Path]) -> Path:
    return short_dir()


@pytest.fixture
def peer(kubelet_dir: Path) -> Iterator[KubeletPeer]:
    with KubeletPeer(kubelet_dir) as kubelet:
        yield kubelet


@pytest.fixture
def start_daemon(
    kubelet_dir: Path, health_dir: Path
) -> Iterator[Callable[..., DevicePluginDaemon]]:
    """Start an in-process daemon (mock backend) in a thread; stopped after the test."""
    running: list[tuple[DevicePluginDaemon, threading.Thread]] = []

    def start(pod_lookup: PodLookup | None = None, **settings: Any) -> DevicePluginDaemon:
        flags = {
            "backend": "mock",
            "mock-devices": 4,
            "kubelet-dir": str(kubelet_dir),
            "mock-health-dir": str(health_dir),
            "health-interval": 0.1,
            "node-name": "node-a",
        }
        flags.update({k.replace("_", "-"): v for k, v in settings.items()})
        daemon = DevicePluginDaemon(resolve_config(flags, {}), pod_lookup=pod_lookup)
        thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
        thread.start()
        running.append((daemon, thread))
        return daemon

    yield start
    for daemon, thread in running:
        daemon.shutdown()
        thread.join(timeout=10)
