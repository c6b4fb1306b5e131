"""How the operator and the API's Kubernetes backend reach the Kubernetes API from asyncio code.

Client plumbing only (the contract they share is sandbox_contract, which talks to nobody): kept
apart so that neither program imports the other's internals.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def tolerating(*statuses: int) -> Iterator[None]:
    """Let API errors with these HTTP statuses pass silently: `with tolerating(404): await delete()`
    for a deletion where already gone is fine, 409 for a creation where already there is."""
    try:
        yield
    except client.ApiException as error:
        if error.status not in statuses:
            raise
