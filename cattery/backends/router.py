"""Several backends behind one: each instance goes to the backend its spec names.

Pools hold one ``Backend``; a deployment of a folder runs on the local backend and a
deployment of an image reference on the container backend, side by side.
"""

from __future__ import annotations

from collections.abc import Mapping

from cattery.backends.base import Backend, InstanceHandle, InstanceSpec, Preparing, Retiring
from cattery.errors import InvalidRequest


class BackendRouter:
    def __init__(self, backends: Mapping[str, Backend]) -> None:
        self._backends = dict(backends)

    def get(self, name: str) -> Backend:
        try:
            return self._backends[name]
        except KeyError:
            raise InvalidRequest(f"The {name!r} backend is not configured here") from None

    async def start(self) -> None:
        for backend in self._backends.values():
            await backend.start()

    async def spawn(self, spec: InstanceSpec) -> InstanceHandle:
        return await self.get(spec.backend).spawn(spec)

    async def prepare(self, spec: InstanceSpec) -> None:
        backend = self.get(spec.backend)
        if isinstance(backend, Preparing):
            await backend.prepare(spec)

    async def retire(self, agent_key: str) -> None:
        for backend in self._backends.values():
            if isinstance(backend, Retiring):
                await backend.retire(agent_key)

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
