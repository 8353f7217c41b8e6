"""Read-model tables (see models/tables.py); filled in by the outbox work."""
