"""One way to reach the Kubernetes API from asyncio code: the operator and the API backend share it."""

from __future__ import annotations

import os

from kubernetes.aio import client, config


async def connect() -> client.ApiClient:
    """An API client from $KUBECONFIG or ~/.kube/config when present, else the in-cluster account."""
    kubeconfig = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    configuration = client.Configuration()
    if os.path.exists(kubeconfig.split(os.pathsep)[0]):
        await config.load_kube_config(config_file=kubeconfig.split(os.pathsep)[0], client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)

