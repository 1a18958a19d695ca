"""The project's leaf: what every layer shares and nothing of ours is imported by.

Lives here: the error taxonomy (``core.errors``). May import: the standard library only.
"""
