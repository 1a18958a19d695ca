"""The project's leaf: what every layer shares and nothing of ours is imported by.

Lives here: the error taxonomy (``core.errors``) and the progress hook every layer reports to
(``core.progress``). May import: the standard library only.
"""
