"""How the driver reaches Ray: the cluster at an address, or a local Ray of its own.

RemoteEnvironment joins the cluster at ``address``, else at SAGE_QUEUE_RAY_ADDRESS (the
queue layer's ray_address setting), else starts a local Ray on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket

try:
    import ray
except ImportError:  # connect() says how to install it
    ray = None

from sage.utils import BackendUnavailableError, load_config
from sage.utils.install_hint import ray_hint

__all__ = ["connect"]


def connect(address: str | None = None) -> str:
    """Join the Ray cluster at ``address``, else SAGE_QUEUE_RAY_ADDRESS (the queue layer's
    ray_address setting), else start a local Ray on 127.0.0.1; the cluster's address.
    A Ray this process is connected to already is used as it is (asking for another
    address then is an error: one process joins one cluster)."""
    if ray is None:
        raise BackendUnavailableError(f"RemoteEnvironment runs on Ray, which is not installed here: {ray_hint()}")
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address and address != "auto" and address.removeprefix("ray://") != current:
            raise RuntimeError(
                f"this process is connected to the Ray cluster at {current} already, so it "
                f"cannot join {address}: call ray.shutdown() first, or leave address out "
                "to use the cluster it is on")
    else:
        address = address or load_config().ray_address
        quiet = dict(include_dashboard=False, logging_level=logging.WARNING)
        if address:
            _join(address, **quiet)
        else:
            _start_local_ray(**quiet)
    return ray.get_runtime_context().gcs_address


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _join(address: str, **options) -> None:
    """ray.init(address) with an answer in seconds: Ray itself retries an address where
    nothing listens for minutes. A cluster on loopback is joined from loopback (see
    _start_local_ray: Ray would otherwise reach for it on the network address)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address != "auto" and host and port.isdigit():
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        except OSError as exc:
            raise ConnectionError(
                f"no Ray cluster answers at {address} ({exc}): start one there (`ray start "
                "--head`), or check the address (RemoteEnvironment(address=...), "
                "SAGE_QUEUE_RAY_ADDRESS)") from None
    if host.strip("[]") not in _LOOPBACK:
        ray.init(address=address, **options)
        return
    with _loopback_only():
        ray.init(address=address, **options)


@contextlib.contextmanager
def _loopback_only():
    """Ray turns 127.0.0.1 into the machine's network address unless its ENABLE_RAY_CLUSTER
    is off (read at each lookup; its environment variable counts only before Ray is
    imported). Off while this process joins or starts a cluster on loopback, as a driver
    joining a real cluster later needs its network address."""
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _start_local_ray(**options) -> None:
    """A Ray of our own, on loopback only (_loopback_only). address="local": with no
    address Ray joins the last cluster started on this machine, whoever's it is. Token
    authentication guards a cluster others can reach; this one they cannot."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with _loopback_only():
        ray.init(address="local", _node_ip_address="127.0.0.1", **options)
