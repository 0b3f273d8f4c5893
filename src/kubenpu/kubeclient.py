"""The official Kubernetes client, set up the same way for every long-running component.

Imported lazily by its callers, so commands that never reach the API (``--help``, the
simulator) do not pay for loading the client.
"""

from __future__ import annotations

from typing import Any


def core_api(kubeconfig: str = "") -> Any:
    """A ``CoreV1Api`` with its own ``ApiClient``: in-cluster credentials when
    ``kubeconfig`` is empty, else that file.

    An own client on purpose: loading into the library's global default configuration
    would leak one component's credentials into another in the same process.
    """
    from kubernetes import client, config

    if kubeconfig:
        api_client = config.new_client_from_config(config_file=kubeconfig)
    else:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        api_client = client.ApiClient(configuration)
    return client.CoreV1Api(api_client)
