"""SQLModel tables, the async engine/session, and the Alembic migrations (schema `ocpp`)."""
