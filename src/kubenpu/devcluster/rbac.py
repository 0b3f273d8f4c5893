"""Grants for the dev cluster's own identities, made once with the admin identity.

Each component (extender, webhook, the API server towards kubelets) authenticates with a
client certificate whose CN is its user name; here that user gets a ClusterRole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kubenpu.devcluster.controlplane import Paths

_RBAC = "rbac.authorization.k8s.io"


def grant_user(
    paths: Paths, user: str, *, rules: Sequence[dict[str, Any]] = (), role: str = ""
) -> None:
    """Bind ``user`` to a ClusterRole: ``role`` if it exists already, else a new one of
    that user's name holding ``rules``."""
    rbac = k8s.RbacAuthorizationV1Api(
        k8s_config.new_client_from_config(config_file=str(paths.admin_kubeconfig))
    )
    # Manifest dicts where the client annotates its models: its validate_call builds them.
    if not role:
        role = user
        rbac.create_cluster_role(
            {  # type: ignore[arg-type]
                "apiVersion": f"{_RBAC}/v1",
                "kind": "ClusterRole",
                "metadata": {"name": role},
                "rules": list(rules),
            }
        )
    rbac.create_cluster_role_binding(
        {  # type: ignore[arg-type]
            "apiVersion": f"{_RBAC}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"kubenpu-dev:{user}:{role}"},
            "roleRef": {"apiGroup": _RBAC, "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": _RBAC, "kind": "User", "name": user}],
        }
    )
