"""docs/deploy.md documents every value of the chart."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from deploy.chart import CHART, REPO

#: Values whose content is free-form (maps and lists passed through): documented as a key.
FREE_FORM = {
    "resources",
    "nodeSelector",
    "affinity",
    "tolerations",
    "podAnnotations",
    "commonLabels",
    "config",
    "annotations",
    "updateStrategy",
    "issuerRef",
    "labels",
    "extraArgs",
    "extraEnv",
}


def leaf_keys(values: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        if isinstance(value, Mapping) and value and key not in FREE_FORM:
            yield from leaf_keys(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def documented_keys(text: str) -> set[str]:
    """Keys in the tables: `a.b.c`, and shorthand `.d` after `a.b.c` meaning `a.b.d`."""
    keys = set()
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        first_cell = line.split("|")[1]
        full = ""
        for token in re.findall(r"`([^`]+)`", first_cell):
            if token.startswith(".") and full:
                keys.add(full.rsplit(".", 1)[0] + token)
            else:
                full = token
                keys.add(token)
    return keys


def test_every_value_is_in_the_values_reference() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = documented_keys((REPO / "docs" / "deploy.md").read_text())
    missing = [k for k in leaf_keys(values) if k not in documented]
    assert not missing, f"docs/deploy.md does not describe {missing}"
