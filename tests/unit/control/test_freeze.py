"""The control plane freezes what start-up built, so full collections skip it."""

from __future__ import annotations

import gc

from cattery.control.main import freeze_long_lived


def test_what_exists_at_start_is_frozen_and_what_follows_is_not() -> None:
    gc.unfreeze()
    try:
        before: list[object] = []  # something start-up built
        freeze_long_lived()
        assert gc.get_freeze_count() > 0
        assert not any(o is before for o in gc.get_objects())  # out of every generation
        after: list[object] = []  # made afterwards: still the collector's
        assert any(o is after for o in gc.get_objects())
    finally:
        gc.unfreeze()
