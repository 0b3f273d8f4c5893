"""The webhook configurations kube-apiserver needs to call ``kubenpu webhook``.

One place states how the webhook is registered (rules, selectors, failure policy,
timeouts, the CEL match condition), for the dev cluster and as the reference the Helm
chart's templates follow; docs/webhook.md explains each choice.
"""

from __future__ import annotations

import base64
from typing import Any

from kubenpu.names import LABEL_ADMISSION, RESOURCE_NPU, RESOURCE_NPU_CORE, RESOURCE_NPU_MEM

#: Name of both the Validating- and the MutatingWebhookConfiguration.
CONFIGURATION_NAME = "kubenpu-webhook"
VALIDATING_WEBHOOK = "validate.npu.kubenpu.io"
MUTATING_WEBHOOK = "mutate.npu.kubenpu.io"
VALIDATE_PATH = "/validate"
MUTATE_PATH = "/mutate"
#: Seconds kube-apiserver waits for an answer (the webhook answers in milliseconds).
TIMEOUT_SECONDS = 5
#: Value of :data:`LABEL_ADMISSION` on a Namespace or Pod that the webhook must not see.
ADMISSION_DISABLED = "disabled"


def _asks_for_npu_cel() -> str:
    """CEL true when a container or init container names an NPU resource."""
    keys = ", ".join(f"'{k}'" for k in (RESOURCE_NPU, RESOURCE_NPU_CORE, RESOURCE_NPU_MEM))
    per = (
        "has(c.resources) && ("
        f"(has(c.resources.limits) && c.resources.limits.exists(k, k in [{keys}])) || "
        f"(has(c.resources.requests) && c.resources.requests.exists(k, k in [{keys}])))"
    )
    return (
        f"object.spec.containers.exists(c, {per}) || "
        f"(has(object.spec.initContainers) && object.spec.initContainers.exists(c, {per}))"
    )


def _webhook(name: str, client_config: dict[str, Any], exclude: tuple[str, ...]) -> dict[str, Any]:
    opt_out = {"key": LABEL_ADMISSION, "operator": "NotIn", "values": [ADMISSION_DISABLED]}
    namespaces: list[dict[str, Any]] = [opt_out]
    if exclude:
        namespaces.append(
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": list(exclude)}
        )
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": client_config,
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ],
        # Pods that ask for no NPU are never sent, so an unavailable webhook cannot block
        # them even with failurePolicy Fail (the webhook also allows them at once).
        "matchConditions": [{"name": "asks-for-npu", "expression": _asks_for_npu_cel()}],
        "namespaceSelector": {"matchExpressions": namespaces},
        "objectSelector": {"matchExpressions": [opt_out]},
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": TIMEOUT_SECONDS,
    }


def _client_config(base_url: str, path: str, ca_pem: bytes) -> dict[str, Any]:
    return {"url": base_url.rstrip("/") + path, "caBundle": base64.b64encode(ca_pem).decode()}


def validating_configuration(
    base_url: str, ca_pem: bytes, *, exclude_namespaces: tuple[str, ...] = ("kube-system",)
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration for a webhook at ``base_url`` (https://host:port)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION_NAME},
        "webhooks": [
            _webhook(
                VALIDATING_WEBHOOK,
                _client_config(base_url, VALIDATE_PATH, ca_pem),
                exclude_namespaces,
            )
        ],
    }


def mutating_configuration(
    base_url: str, ca_pem: bytes, *, exclude_namespaces: tuple[str, ...] = ("kube-system",)
) -> dict[str, Any]:
    """The MutatingWebhookConfiguration for a webhook at ``base_url`` (https://host:port)."""
    webhook = _webhook(
        MUTATING_WEBHOOK, _client_config(base_url, MUTATE_PATH, ca_pem), exclude_namespaces
    )
    # The patch only adds fields other mutating webhooks do not remove; one call is enough.
    webhook["reinvocationPolicy"] = "Never"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION_NAME},
        "webhooks": [webhook],
    }
