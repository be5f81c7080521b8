"""Lethe's own store (PostgreSQL, or SQLite embedded): its tables and sessions, the
migrations, and the reads and writes every room shares: the event log, the audit trail,
receipts, event payloads and the suppression list."""
