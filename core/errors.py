"""Error classes every layer raises; the CLI maps them to its exit-status contract.

:class:`InputError` means "the user's input is wrong" (a file, a setting, a parameter, a catalog
entry): the command exits 2 with one line naming the input. Anything else that escapes a command
is a bug or an environment failure: exit 1, with the traceback under ``GLACIAL_LAKES_DEBUG=1``.

``InputError`` derives from ``ValueError`` so callers that guard a single value keep working, but
a plain ``ValueError`` from deep inside numpy or shapely is *not* an input error: raise one of the
classes below, with a message that names the input, where the input is checked.

This module is a leaf: it imports nothing of the project (and no third-party package).
"""

from __future__ import annotations

__all__ = [
    "AoiError",
    "CorruptDownloadError",
    "InferenceBackendError",
    "InputError",
    "InventoryFileError",
    "ModelLoadError",
    "RasterInputError",
    "SafeProductError",
    "SettingsError",
    "SourceError",
    "UnsafePathError",
    "interrupted",
]


class InputError(ValueError):
    """The user's input is wrong; the message names it (one line)."""


class SettingsError(InputError):
    """A setting (environment variable or CLI option) is missing or out of range."""


class AoiError(InputError):
    """An AOI file or geometry is unusable (unreadable, no CRS, invalid, too large)."""


class SourceError(InputError):
    """A catalog or source URI is unusable (unknown scheme, missing catalog, bad item)."""


class ModelLoadError(InputError):
    """A model spec or checkpoint cannot be loaded (missing file, wrong format, key mismatch)."""


class RasterInputError(InputError):
    """An input raster is unusable (unreadable, wrong band count, no CRS, no overlap)."""


class InventoryFileError(InputError):
    """An inventory file to import is unusable (unreadable, no CRS, no polygons)."""


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised while handling, a signal or interrupt (not an error).

    A ``SystemExit``, ``KeyboardInterrupt`` or a library's termination signal (Prefect turns
    SIGTERM into one) is a ``BaseException`` but no ``Exception``; libraries that catch it and
    raise their own error keep it in the chain (``__cause__`` / ``__context__``). Such an error
    must end the run, never be recorded as one scene's failure while the others go on.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if not isinstance(current, Exception):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class CorruptDownloadError(SourceError):
    """A downloaded product fails its check (checksum or size differs from what the source states)."""


class UnsafePathError(InputError):
    """A path or archive member would land outside the data root (``..``, absolute, symlink, ``/vsi…``, URL)."""


class SafeProductError(SourceError):
    """A SAFE product (folder or zip) is unusable (no manifest, a file missing, zip-slip …)."""


class InferenceBackendError(ModelLoadError):
    """The chosen inference backend cannot run the model (e.g. its ONNX export failed); names the setting to change."""
