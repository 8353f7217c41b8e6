"""Read-model tables (see models/tables.py); filled in by the reporting work."""
