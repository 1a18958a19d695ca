"""Pure logic and single stages (files in temporary folders; no database, no Prefect server)."""
