"""Test data generators (fabricated inputs; nothing here is shipped)."""
