"""Clients of the outside services the control plane calls: Daily's REST API."""
