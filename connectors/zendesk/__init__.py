"""Zendesk Support: a ticket per work item, created or updated (per-connection subdomain)."""
