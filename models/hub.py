"""Where ``hf://`` model specs are looked up: the Hugging Face cache folder and the offline flag.

A value object, filled in at the edge (CLI or flow entry) and passed down to
:func:`models.registry.load_segmenter` and :func:`models.checkpoint.load_model`; nothing in
``models/`` reads the environment. :meth:`HubCache.from_variables` applies Hugging Face's own
convention for its variables, so the edge only hands over their values.

This module is a leaf (standard library only, no torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_HUB", "HF_SCHEME", "HF_VARIABLES", "HubCache", "is_hub_spec"]

HF_SCHEME = "hf://"
"""Prefix of model specs served from the Hugging Face Hub: ``hf://<org>/<repo>[@<revision>]/<path>``."""

HF_VARIABLES: tuple[str, ...] = ("HF_HUB_CACHE", "HF_HOME", "HF_HUB_OFFLINE")
"""The Hugging Face environment variables the edge reads and passes to :meth:`HubCache.from_variables`."""

_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class HubCache:
    """How ``hf://`` specs are resolved (hashable: it is part of the segmenter cache key).

    Attributes:
        cache_dir: The hub cache folder (``HF_HUB_CACHE``, else ``$HF_HOME/hub``); ``None`` leaves
            the choice to ``huggingface_hub`` (its default, ``~/.cache/huggingface/hub``).
        offline: Look in the cache only, never on the Hub (``HF_HUB_OFFLINE``).
    """

    cache_dir: Path | None = None
    offline: bool = False

    @classmethod
    def from_variables(
        cls,
        hf_hub_cache: str | Path | None = None,
        hf_home: str | Path | None = None,
        hf_hub_offline: str | bool | None = None,
    ) -> HubCache:
        """Hugging Face's convention: ``HF_HUB_CACHE`` wins over ``HF_HOME/hub``; empty means unset.

        ``hf_hub_offline`` is true for ``1``, ``true``, ``yes``, ``on`` (any case) or ``True``.
        """
        cache_dir: Path | None = None
        if hf_hub_cache is not None and str(hf_hub_cache).strip():
            cache_dir = Path(hf_hub_cache)
        elif hf_home is not None and str(hf_home).strip():
            cache_dir = Path(hf_home) / "hub"
        if isinstance(hf_hub_offline, bool):
            offline = hf_hub_offline
        else:
            offline = (hf_hub_offline or "").strip().lower() in _TRUE
        return cls(cache_dir, offline)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> HubCache:
        """:meth:`from_variables` over the :data:`HF_VARIABLES` of ``environ`` (the edge passes ``os.environ``)."""
        return cls.from_variables(environ.get("HF_HUB_CACHE"), environ.get("HF_HOME"), environ.get("HF_HUB_OFFLINE"))


DEFAULT_HUB = HubCache()
"""``huggingface_hub``'s own cache folder, online: the default where no edge passes a hub."""


def is_hub_spec(spec: str) -> bool:
    """Whether a model spec names a file on the Hugging Face Hub (``hf://…``)."""
    return spec.startswith(HF_SCHEME)
