"""Faults: kill -9 mid-merge, concurrent merges, deadlock accounting (slow)."""
