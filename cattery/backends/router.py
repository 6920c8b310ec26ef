"""Several backends behind one: each instance goes to the backend its spec names.

Pools hold one ``Backend``; a deployment of a folder runs on the local backend and a
deployment of an image reference on the container backend, side by side.
"""

from __future__ import annotations

from collections.abc import Mapping

from cattery.backends.base import (
    Adopting,
    Adoption,
    Backend,
    InstanceHandle,
    InstanceSpec,
    Locator,
    Preparing,
    Retiring,
)
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

    # -- restarts: each instance is found again by the backend that made it --------------

    def adoptable(self) -> list[InstanceHandle]:
        """The instances of every backend that can adopt them after a restart."""
        return [h for b in self._backends.values() if isinstance(b, Adopting) for h in b.handles]

    def locate(self, handle: InstanceHandle) -> Locator | None:
        """Where ``handle`` runs, if its backend can find it again after a restart."""
        backend = self._backends.get(handle.spec.backend)
        return backend.locate(handle) if isinstance(backend, Adopting) else None

    async def adopt(
        self, backend_name: str, instance_id: str, spec: InstanceSpec, locator: Locator
    ) -> Adoption:
        """The instance a stored locator names, from the backend named on its record; not
        found (gone, or that backend is not here or cannot adopt) without a handle."""
        backend = self._backends.get(backend_name)
        if not isinstance(backend, Adopting):
            return Adoption(None)
        return await backend.adopt(instance_id, spec, locator)

    async def last_lines(self, instance_id: str) -> tuple[str, ...]:
        """The last lines a gone instance left with whichever backend kept them."""
        for backend in self._backends.values():
            if isinstance(backend, Adopting):
                lines = await backend.last_lines(instance_id)
                if lines:
                    return lines
        return ()

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
