"""Alembic migrations: the only way the job store's schema changes (see ``service.db.migrate``)."""
