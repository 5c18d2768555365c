"""Durable state in PostgreSQL: schema migrations, the service inbox/outbox, the relay."""
