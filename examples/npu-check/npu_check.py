#!/usr/bin/env python3
"""npu-check: which NPUs does this container see, and are they the ones it was given?

The workload of the ``kubenpu.local/npu-check`` image. It prints one fact per line, each
line ``<kind> <value>``, then a verdict:

    env NPU_VISIBLE_DEVICES=0,1
    env MOCK_NPU_VISIBLE_DEVICES=0,1
    device /dev/mock-npu0 240:0
    device /dev/mock-npu1 240:1
    record npu-0,npu-1
    ok 2 device(s): 0,1

``env`` lines: every environment variable whose name contains ``NPU_VISIBLE_DEVICES``
(the device plugin sets ``NPU_VISIBLE_DEVICES`` and its backend's own, e.g.
``MOCK_NPU_VISIBLE_DEVICES``), with device indices as values. ``device`` lines: every
character device under /dev named ``npu*``, ``mock-npu*`` or ``kubenpu-npu*``, with its
major:minor. ``record``: ``$KUBENPU_DEVICES``, which the example manifest fills from the
pod's ``kubenpu.io/devices`` annotation (the placement the scheduler extender recorded)
through the downward API; it is checked only when the variable is set (an empty value,
the downward API's answer for a missing annotation, means "no record" and fails).

Exit status 0 (last line ``ok ...``) when the container was given at least one device
node and the device nodes, the ``*NPU_VISIBLE_DEVICES`` variables and the record all
name the same device indices; 1 (last line ``error <reason>``) otherwise. A device is
known by the number its id or node name ends in (``npu-1``, ``/dev/mock-npu1``:
index 1), which is how the kubenpu backends number them. ``--sleep N`` waits N seconds
after printing (so that a test can exec into the running container).

Standard library only: it runs on the image's Debian python3.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import stat
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: Names of device nodes taken for NPUs (mock backend, dev cluster, devfs conventions).
DEVICE_PATTERNS = ("npu*", "mock-npu*", "kubenpu-npu*")
#: What the names of the visible-devices variables contain.
ENV_MARKER = "NPU_VISIBLE_DEVICES"
#: The variable the example manifest fills from the kubenpu.io/devices annotation.
RECORD_ENV = "KUBENPU_DEVICES"

_TRAILING_NUMBER = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class Device:
    """A character device node seen in the container."""

    path: str
    major: int
    minor: int

    @property
    def index(self) -> int | None:
        """The number the node's name ends in (``mock-npu3`` -> 3), if any."""
        return trailing_index(os.path.basename(self.path))


def trailing_index(name: str) -> int | None:
    """``npu-2`` -> 2, ``davinci10`` -> 10, ``ctl`` -> None."""
    match = _TRAILING_NUMBER.search(name.strip())
    return int(match.group(1)) if match else None


def find_devices(dev_root: str = "/dev") -> list[Device]:
    """Character devices under ``dev_root`` (recursively, symlinks not followed) whose
    names match :data:`DEVICE_PATTERNS`, sorted by path."""
    found: list[Device] = []
    stack = [dev_root]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # unreadable (e.g. a restricted subdirectory): not ours to report
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
            elif stat.S_ISCHR(st.st_mode) and any(
                fnmatch.fnmatchcase(entry.name, p) for p in DEVICE_PATTERNS
            ):
                found.append(Device(entry.path, os.major(st.st_rdev), os.minor(st.st_rdev)))
    return sorted(found, key=lambda d: d.path)


def _indices(value: str) -> list[int] | None:
    """``0,1`` -> [0, 1]; None when a token is not an index (``all``, a UUID)."""
    tokens = [t.strip() for t in value.split(",") if t.strip()]
    if not all(t.isdigit() for t in tokens):
        return None
    return sorted(int(t) for t in tokens)


def _show(indices: Iterable[int]) -> str:
    return ",".join(str(i) for i in sorted(indices)) or "<none>"


def check(
    env: Mapping[str, str], devices: Sequence[Device], dev_root: str = "/dev"
) -> tuple[list[str], str | None]:
    """The report lines, and the reason for failing (None when everything matches)."""
    lines: list[str] = []
    visible = {name: env[name] for name in sorted(env) if ENV_MARKER in name}
    lines += [f"env {name}={value}" for name, value in visible.items()]
    lines += [f"device {d.path} {d.major}:{d.minor}" for d in devices]
    record = env.get(RECORD_ENV)
    if record is not None:
        lines.append(f"record {record or '<none>'}")

    if not devices:
        named = ", ".join(f"{n}={v}" for n, v in visible.items())
        return lines, f"no NPU device node under {dev_root}" + (
            f" although {named}" if named else ""
        )
    unnumbered = [d.path for d in devices if d.index is None]
    if unnumbered:
        return lines, f"device node(s) {', '.join(unnumbered)} carry no index"
    seen = sorted({d.index for d in devices if d.index is not None})
    for name, value in visible.items():
        given = _indices(value)
        if given is None:
            return lines, f"{name}={value!r} is not a comma-separated list of device indices"
        if given != seen:
            return lines, f"{name}={_show(given)} but the device nodes are {_show(seen)}"
    if record is not None:
        ids = [t.strip() for t in record.split(",") if t.strip()]
        if not ids:
            return lines, f"{RECORD_ENV} is empty: the pod has no kubenpu.io/devices record"
        recorded = [trailing_index(i) for i in ids]
        if None in recorded:
            return lines, f"record {record!r} has a device id without an index"
        if sorted(i for i in recorded if i is not None) != seen:
            return lines, (
                f"record {record} (indices {_show(i for i in recorded if i is not None)}) "
                f"but the container sees {_show(seen)}"
            )
    return lines, None


def verdict(devices: Sequence[Device]) -> str:
    """The last line of a passing check: ``ok 2 device(s): 0,1``."""
    seen = sorted({d.index for d in devices if d.index is not None})
    return f"ok {len(seen)} device(s): {_show(seen)}"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report; 0 when the devices match, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--sleep", type=float, default=0.0, metavar="N", help="seconds to wait after printing"
    )
    parser.add_argument("--dev", default="/dev", help="where to look for device nodes")
    args = parser.parse_args(argv)
    devices = find_devices(args.dev)
    lines, reason = check(os.environ, devices, args.dev)
    for line in lines:
        print(line)
    if reason is None:
        print(verdict(devices))
    else:
        print(f"error {reason}")
    sys.stdout.flush()
    if args.sleep > 0:
        time.sleep(args.sleep)
    return 0 if reason is None else 1


if __name__ == "__main__":
    sys.exit(main())
