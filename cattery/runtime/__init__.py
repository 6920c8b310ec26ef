"""The instance server: hosts one ``bot.py`` behind the pipecat-base HTTP contract.

Nothing here imports the control plane or the store, so a pre-importing parent that
forks instances stays small.
"""
