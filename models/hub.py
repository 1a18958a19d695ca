"""Where ``hf://`` model specs are looked up: the Hugging Face cache folder and the offline flag.

A value object, filled in at the edge (the CLI reads ``HF_HUB_CACHE``, ``HF_HOME`` and
``HF_HUB_OFFLINE`` through ``flows.settings.Settings``) and passed down to
:func:`models.registry.load_segmenter`, :func:`models.checkpoint.load_model` and
:func:`models.train.train`; nothing in ``models/`` reads the environment.

This module is a leaf (standard library only, no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_HUB", "HF_SCHEME", "HubCache", "is_hub_spec"]

HF_SCHEME = "hf://"
"""Prefix of model specs served from the Hugging Face Hub: ``hf://<org>/<repo>[@<revision>]/<path>``."""


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


DEFAULT_HUB = HubCache()
"""``huggingface_hub``'s own cache folder, online: the default where no edge passes a hub."""


def is_hub_spec(spec: str) -> bool:
    """Whether a model spec names a file on the Hugging Face Hub (``hf://…``)."""
    return spec.startswith(HF_SCHEME)
