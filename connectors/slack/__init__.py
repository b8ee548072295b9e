"""Slack: work item updates posted to a channel with ``chat.postMessage``."""
