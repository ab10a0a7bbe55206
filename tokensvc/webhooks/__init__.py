"""Webhooks (SPEC §10): the event catalogue, the outbox's dispatcher, and signatures."""
