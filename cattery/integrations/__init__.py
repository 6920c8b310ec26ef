"""The outside services the control plane speaks to: Daily's REST API, carriers' webhooks."""
