"""Google Calendar: work item due dates as all-day events (Calendar API v3)."""
