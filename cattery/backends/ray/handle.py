"""One instance on a cluster node: the control plane's handle over its node host's.

The node host owns the process; this handle asks it to probe, drain, close or kill, and
learns of the exit from the node host's batches (``exited``) or of the node's loss
(``lost``). Its address is the node's: the control plane proxies there as to a local one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loguru import logger
from ray.exceptions import RayError

from cattery.backends.base import (
    InstanceFailed,
    InstanceSpec,
    InstanceStartTimeout,
    InstanceStatus,
)
from cattery.backends.handles import TERMINAL, ExitEventHandle
from cattery.backends.ray.calls import answer_within

#: beyond the grace a node host is given to close an instance, before we stop waiting
CLOSE_MARGIN_SECONDS = 15.0


class RayInstanceHandle(ExitEventHandle):
    """Owned by one pool (or the Ray backend); ``aclose`` is idempotent."""

    def __init__(
        self,
        *,
        instance_id: str,
        spec: InstanceSpec,
        node_id: str,
        node_ip: str,
        actor: Any,
        address: str,
        token: str,
        pid: int | None,
        forked: bool = False,
        status: InstanceStatus = InstanceStatus.STARTING,
        on_closed: Callable[[RayInstanceHandle], None] | None = None,
    ) -> None:
        super().__init__(
            instance_id=instance_id, spec=spec, token=token, status=status, on_closed=on_closed
        )
        self.node_id = node_id
        self.node_ip = node_ip
        self.forked = forked
        self._actor = actor
        self._address = address
        self._pid = pid
        self._fenced: str | None = None
        self._lost_reason: str | None = None

    @property
    def address(self) -> str:
        return self._address

    @property
    def pid(self) -> int | None:
        """The pid on its node (not this machine's)."""
        return self._pid

    @property
    def fenced(self) -> str | None:
        """Why nothing may be sent to it now (its node stopped answering), or None."""
        return None if self._exited.is_set() else self._fenced

    @property
    def lost_reason(self) -> str | None:
        """Why the control plane took it for gone (its node died or stayed fenced), or None."""
        return self._lost_reason

    def fence(self, reason: str | None) -> None:
        self._fenced = reason

    def _placement(self) -> dict[str, str]:
        return {"node": self.node_ip, "pid": str(self._pid)}

    async def _until_ready(self, timeout: float) -> None:
        try:
            answer = await answer_within(
                self._actor.ready.remote(self.id, timeout), timeout + CLOSE_MARGIN_SECONDS
            )
        except (RayError, TimeoutError) as exc:
            answer = {"ok": False, "error": f"its node {self.node_ip} did not answer: {exc!r}"}
        if not answer["ok"]:
            if self._status not in TERMINAL:
                self._set_status(InstanceStatus.FAILED)
            error = InstanceStartTimeout if answer.get("timeout") else InstanceFailed
            raise error(answer["error"], instance_id=self.id, output=answer.get("output", ""))

    async def drain(self, timeout: float) -> None:
        if self._exited.is_set():
            return
        self._stop_requested = True
        self._mark_draining()
        try:
            await answer_within(
                self._actor.drain.remote(self.id, timeout), timeout + CLOSE_MARGIN_SECONDS
            )
        except (RayError, TimeoutError) as exc:
            logger.bind(**self.log_context()).warning(f"Draining failed: {exc!r}")

    def kill(self) -> None:
        self._stop_requested = True
        try:
            self._actor.kill.remote(self.id)
        except RayError as exc:
            logger.bind(**self.log_context()).warning(f"Killing failed: {exc!r}")

    def exited(self, code: int | None, status: str) -> None:
        """The node host saw the process exit."""
        if self._exited.is_set():
            return
        self._exit_code = code
        self._exited.set()
        self._settle_exit(clean=status == InstanceStatus.STOPPED.value)

    def lost(self, reason: str) -> None:
        """Its node is gone: the instance with it."""
        logger.bind(**self.log_context()).warning(f"Instance lost: {reason}")
        self._lost_reason = reason
        self.exited(None, InstanceStatus.FAILED.value)

    async def _close(self, grace: float) -> None:
        try:
            if not self._exited.is_set():
                self._stop_requested = True
                self._mark_draining()
            await answer_within(
                self._actor.close.remote(self.id, grace), grace + CLOSE_MARGIN_SECONDS
            )
        except (RayError, TimeoutError) as exc:
            logger.bind(**self.log_context()).warning(f"Closing on its node failed: {exc!r}")
        finally:
            self._exited.set()
            self._closed()

    def __repr__(self) -> str:
        return f"<RayInstanceHandle {self.id} {self._status} on {self.node_ip}>"
