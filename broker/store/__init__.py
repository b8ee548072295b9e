"""Persistence: SQLModel tables, queries and Alembic migrations (SQLite and PostgreSQL)."""
