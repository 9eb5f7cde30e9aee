"""Onboard persistence: one SQLite file with durable (fsynced) commits."""
