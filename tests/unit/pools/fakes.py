"""The fake backend, where pool tests first found it (it lives in ``tests.support``)."""

from tests.support.fake_backend import FakeBackend, FakeHandle

__all__ = ["FakeBackend", "FakeHandle"]
