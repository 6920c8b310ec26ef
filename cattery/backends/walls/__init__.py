"""Walls around an instance of the local backend: its own user, its own view of the files,
its own cgroup (or a subreaper), its memory limit.

This package's ``__init__`` stays empty of imports: ``enter`` runs as root before every
instance and should load nothing it does not need.
"""
