"""GitHub: an issue per work item, and comments on it (REST API v3)."""
