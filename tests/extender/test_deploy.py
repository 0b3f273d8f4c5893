"""deploy/extender/ says what kubenpu.extender.config generates."""

from __future__ import annotations

from pathlib import Path

import yaml

from kubenpu.extender.config import RBAC_RULES, scheduler_configuration

DEPLOY = Path(__file__).parents[2] / "deploy" / "extender"


def test_scheduler_configuration_example_matches_the_generated_one() -> None:
    example = yaml.safe_load((DEPLOY / "kube-scheduler-config.yaml").read_text())
    (entry,) = example["extenders"]
    generated = scheduler_configuration(
        entry["urlPrefix"],
        example["clientConnection"]["kubeconfig"],
        ca_data=entry["tlsConfig"]["caData"],
    )
    assert generated["extenders"] == example["extenders"]
    assert generated["apiVersion"] == example["apiVersion"]
    assert entry["nodeCacheCapable"] is True and entry["ignorable"] is False


def test_rbac_example_grants_exactly_the_rules() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()))
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    assert role["rules"] == RBAC_RULES
