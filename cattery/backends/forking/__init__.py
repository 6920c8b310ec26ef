"""Forking parents: instances forked from a process that has already imported the bot.

A forking parent (``parent.py``) is a plain Python process that runs the runtime's
``prepare`` (Pipecat, cattery's runtime and the agent's ``bot.py`` imported once), freezes
the garbage collector and then forks one child per instance on request. It has no threads
and no event loop. The local backend talks to it over a Unix socket (``client.py``); the
child (``child.py``) serves the runtime contract exactly like a ``cattery runtime`` process.

This package's ``__init__`` stays empty of imports: the parent runs as
``python -m cattery.backends.forking.parent`` and should load nothing it does not need.
"""
