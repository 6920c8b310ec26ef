"""A test bot that imports fine but whose forked instances die as they start serving, as
one whose start fails would: a fork hook (registered at import, in the forking parent)
makes each child raise before its server listens. Plain processes are not forked and
serve as usual."""

import os


def _break_the_start():
    import cattery.runtime.main as runtime

    def dies(*args, **kwargs):
        raise RuntimeError("dies-at-start bot: dying before it serves, on purpose")

    runtime.serve_forked = dies


os.register_at_fork(after_in_child=_break_the_start)


async def bot(runner_args) -> None:
    return None
