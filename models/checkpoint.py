"""Finding, reading, strictly loading and writing TerraMind segmentation checkpoints.

Accepted files (``torch.load(weights_only=True)``: a checkpoint never runs code):

* **Lightning** (the CryoSentinel release and ours): ``{"state_dict": {"model.<key>": …}, …}``.
  ``_orig_mod.`` (``torch.compile``) is stripped; any key outside ``model.`` is unexpected.
  Ours adds ``"glacial_lakes": {"config": …, "stats": …}``.
* **Bare state dict** of the terratorch model (optionally ``model.``-prefixed).
* **TerraMind backbone** (``TerraMind_v1_<size>.pt``: encoder keys at top level): only for
  fine-tuning, loaded into the encoder by :func:`load_backbone`; the decoder stays random.

Variant, layout and head are read off tensor shapes (:func:`infer_config`). Loading is strict:
a missing key, an unexpected key or a wrong shape refuses the file, naming the keys.

Locations: a local path, or ``hf://<org>/<repo>[@<revision>]/<path>`` through the Hugging Face
cache (``hf_hub_download``). Which cache, and whether to stay offline, is an explicit
:class:`~models.hub.HubCache` parameter filled in at the edge: this module reads no environment
variable. Normalisation statistics: embedded in the checkpoint, else a sibling
``<file>.stats.json``, else CryoSentinel's.

The model version is ``<sha256 of the file, 16 hex>+<config hash>``. Checkpoints are written
through :func:`core.files.atomic_path`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import ModelLoadError
from core.files import atomic_path
from models.hub import DEFAULT_HUB, HF_SCHEME, HubCache
from models.normalisation import NormStats, load_stats
from models.terramind import VARIANTS, ModelConfig, build_model

__all__ = [
    "LoadedModel",
    "ParsedCheckpoint",
    "config_of",
    "file_sha256",
    "infer_config",
    "load_backbone",
    "load_model",
    "parse_checkpoint",
    "read_checkpoint",
    "resolve_weights",
    "save_checkpoint",
    "strict_load",
    "write_release_checkpoint",
]

STATS_SUFFIX = ".stats.json"
FORMAT_KEY = "glacial_lakes"

# Parts of a full TerraMind pretraining file that an encoder does not use.
_PRETRAIN_EXTRAS = (
    "decoder_embeddings.",
    "decoder.",
    "decoder_norm.",
    "decoder_proj_context.",
    "mask_token",
    "register_tokens",
    "tokenizer.",
)
_OUR_EMBEDDINGS = ("untok_sen2l2a@224", "untok_sen1grd@224", "untok_dem@224")


@dataclass(frozen=True, eq=False)
class ParsedCheckpoint:
    """A checkpoint's tensors with prefixes removed, and what it says about itself.

    Attributes:
        kind: ``lightning`` | ``state_dict`` | ``backbone``.
        state_dict: terratorch model keys (``encoder.…``, ``decoder.…``), or for ``backbone``
            TerraMind encoder keys (``encoder_embeddings.…``, ``encoder.<i>.…``).
        config: Architecture embedded by our trainer, if any.
        stats: Normalisation statistics embedded by our trainer, if any.
    """

    kind: str
    state_dict: dict[str, torch.Tensor]
    config: ModelConfig | None = None
    stats: NormStats | None = None


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A strictly loaded segmentation model in eval mode, with its provenance."""

    model: nn.Module
    config: ModelConfig
    stats: NormStats
    weights_sha256: str
    source: str
    kind: str = "lightning"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """``<file sha256, 16 hex>+<config hash>``."""
        return f"{self.weights_sha256[:16]}+{self.config.config_hash}"


# --- locating files ----------------------------------------------------------------------------


def _parse_hf(spec: str) -> tuple[str, str, str | None]:
    rest = spec[len(HF_SCHEME) :]
    parts = rest.split("/")
    if len(parts) < 3 or not all(parts):
        raise ModelLoadError(f"{spec}: expected hf://<org>/<repo>[@<revision>]/<path>")
    name, _, revision = parts[1].partition("@")
    return f"{parts[0]}/{name}", "/".join(parts[2:]), revision or None


def _hf_download(spec: str, hub: HubCache, filename_suffix: str = "") -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    repo_id, filename, revision = _parse_hf(spec)
    try:
        # cache_dir and local_files_only are passed on every call: huggingface_hub reads its own
        # variables once at import, the edge reads them per command.
        path = hf_hub_download(
            repo_id,
            filename + filename_suffix,
            revision=revision,
            cache_dir=hub.cache_dir,
            local_files_only=hub.offline,
        )
    except LocalEntryNotFoundError as exc:
        where = "the Hugging Face cache (HF_HUB_OFFLINE is set)" if hub.offline else "the cache or on the Hub"
        raise ModelLoadError(f"{spec}{filename_suffix}: not found in {where}") from exc
    except (HfHubHTTPError, HFValidationError, OSError) as exc:
        raise ModelLoadError(f"{spec}{filename_suffix}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    return Path(str(path))


def resolve_weights(spec: str, hub: HubCache = DEFAULT_HUB) -> Path:
    """The local file behind a model spec (a path, or ``hf://…`` through the HF cache ``hub``)."""
    if spec.startswith(HF_SCHEME):
        return _hf_download(spec, hub)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"{spec}: no such checkpoint file")
    return path


def _sibling_stats(spec: str, path: Path, hub: HubCache) -> NormStats | None:
    if spec.startswith(HF_SCHEME):
        try:
            return NormStats.from_json(_hf_download(spec, hub, STATS_SUFFIX))
        except ModelLoadError:
            return None
    sibling = path.with_name(path.name + STATS_SUFFIX)
    return NormStats.from_json(sibling) if sibling.is_file() else None


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- reading and parsing -----------------------------------------------------------------------


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True`` (Lightning's AttributeDict allowed)."""
    safe: list[Any] = []
    try:  # Lightning pickles hyper-parameters as AttributeDict, a plain dict subclass
        from lightning.fabric.utilities.data import AttributeDict

        safe.append(AttributeDict)
    except ImportError:  # pragma: no cover - lightning comes with terratorch
        pass
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types; all mean "not loadable"
        raise ModelLoadError(f"not a loadable checkpoint: {str(exc).splitlines()[0]}") from exc


def _short(keys: list[str], n: int = 4) -> str:
    keys = sorted(keys)
    more = f" … (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _strip(sd: dict[str, Any], prefix_required: bool) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    outside: list[str] = []
    for key, value in sd.items():
        k = key.replace("_orig_mod.", "")
        if k.startswith("model."):
            k = k[len("model.") :]
        elif prefix_required:
            outside.append(key)
            continue
        if not isinstance(value, torch.Tensor):
            raise ModelLoadError(f"checkpoint entry {key!r} is not a tensor")
        out[k] = value
    if outside:
        raise ModelLoadError(f"checkpoint has unexpected keys outside 'model.': {_short(outside)}")
    return out


def parse_checkpoint(obj: Any) -> ParsedCheckpoint:
    """Classifies a loaded checkpoint object and normalises its keys (module docstring)."""
    if not isinstance(obj, dict) or not obj:
        raise ModelLoadError("checkpoint is not a dict of tensors or a Lightning checkpoint")
    if isinstance(obj.get("state_dict"), dict):
        sd = _strip(obj["state_dict"], prefix_required=True)
        ours = obj.get(FORMAT_KEY) or {}
        config = ModelConfig.from_dict(ours["config"]) if "config" in ours else None
        stats = NormStats.from_dict(ours["stats"]) if "stats" in ours else None
        return ParsedCheckpoint("lightning", sd, config, stats)
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"checkpoint is neither a state dict nor a Lightning checkpoint: keys {_short(list(obj))}")
    prefixed = any(k.replace("_orig_mod.", "").startswith("model.") for k in obj)
    sd = _strip(obj, prefix_required=prefixed)
    kind = "backbone" if any(k.startswith("encoder_embeddings.") for k in sd) else "state_dict"
    return ParsedCheckpoint(kind, sd)


def _variant(dim: int, depth: int) -> str:
    for name, spec in VARIANTS.items():
        if (spec.dim, spec.depth) == (dim, depth):
            return name
    raise ModelLoadError(f"no TerraMind v1 variant has width {dim} and {depth} blocks")


def _encoder_shape(sd: dict[str, torch.Tensor], prefix: str) -> tuple[int, int]:
    norm = sd.get(f"{prefix}encoder_norm.weight")
    if norm is None:
        raise ModelLoadError(f"no TerraMind encoder in the checkpoint ({prefix}encoder_norm.weight missing)")
    blocks = {int(m.group(1)) for k in sd if (m := re.match(rf"^{re.escape(prefix)}encoder\.(\d+)\.", k))}
    return int(norm.shape[0]), (max(blocks) + 1 if blocks else 0)


def infer_config(sd: dict[str, torch.Tensor]) -> ModelConfig:
    """Variant, layout and head of a full-model state dict, from its tensor shapes."""
    variant = _variant(*_encoder_shape(sd, "encoder."))
    layout = "heavy" if any(k.startswith("decoder.fpn1.") for k in sd) else "light"
    heads = sorted(
        (k for k in sd if k.startswith("head.") and k.endswith(".weight") and sd[k].ndim == 4),
        key=lambda k: [int(p) if p.isdigit() else p for p in k.split(".")],
    )
    if not heads:
        raise ModelLoadError("no segmentation head in the checkpoint (head.*.weight missing)")
    # Any one of these gives the UperNet width; the strict key check names whatever is missing.
    widths = [sd[k] for k in ("decoder.fpn_bottleneck.conv.weight", "decoder.bottleneck.conv.weight") if k in sd]
    if not widths:
        raise ModelLoadError("no UperNet decoder in the checkpoint (decoder.*bottleneck.conv.weight missing)")
    num_classes = int(sd[heads[-1]].shape[0])
    if num_classes not in (1, 2):
        raise ModelLoadError(f"head has {num_classes} classes; only 1 (sigmoid) or 2 (softmax) are supported")
    return ModelConfig(variant, layout, num_classes, decoder_channels=int(widths[0].shape[0]))


def config_of(parsed: ParsedCheckpoint) -> ModelConfig:
    """The architecture of a full-model checkpoint: read off its shapes, checked against its own claim.

    Our checkpoints embed their config, which also holds what shapes cannot show (merge method).
    """
    config = infer_config(parsed.state_dict)
    if parsed.config is None:
        return config
    seen = (config.variant, config.layout, config.num_classes, config.decoder_channels)
    said = (parsed.config.variant, parsed.config.layout, parsed.config.num_classes, parsed.config.decoder_channels)
    if seen != said:
        raise ModelLoadError(f"embedded config {said} disagrees with the tensors {seen}")
    return parsed.config


def _check_keys(
    expected: dict[str, torch.Tensor],
    given: dict[str, torch.Tensor],
    what: str,
    allowed_extra: Callable[[str], bool] | None = None,
) -> None:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected and not (allowed_extra and allowed_extra(k))]
    shapes = [
        f"{k} {tuple(given[k].shape)}≠{tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and tuple(given[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_short(unexpected)}")
    if shapes:
        problems.append(f"wrong shapes: {_short(shapes, 2)}")
    if problems:
        raise ModelLoadError(f"checkpoint does not match {what}; " + "; ".join(problems))


def strict_load(model: nn.Module, sd: dict[str, torch.Tensor], config: ModelConfig) -> None:
    """Loads ``sd`` into ``model``; any missing/unexpected key or shape mismatch refuses."""
    what = f"terramind-{config.variant} ({config.layout} layout, {config.num_classes}-class head)"
    _check_keys(model.state_dict(), sd, what)
    model.load_state_dict(sd, strict=True)


def _pretrain_extra(key: str) -> bool:
    if key.startswith("encoder_embeddings."):
        return key.split(".")[1] not in _OUR_EMBEDDINGS
    return key.startswith(_PRETRAIN_EXTRAS)


def load_backbone(model: nn.Module, path: str | Path) -> str:
    """Loads a TerraMind backbone checkpoint into ``model.encoder`` (decoder stays random).

    The file's other TerraMind parts (decoder, other modalities' embeddings) are ignored;
    every encoder key must be present with its shape and nothing else may appear.

    Returns:
        The file's sha256.
    """
    encoder = model.get_submodule("encoder")  # the terratorch model's backbone
    try:
        parsed = parse_checkpoint(read_checkpoint(path))
        sd = parsed.state_dict
        if parsed.kind != "backbone":
            raise ModelLoadError("not a TerraMind backbone checkpoint (no top-level encoder_embeddings)")
        _check_keys(encoder.state_dict(), sd, "the TerraMind encoder", allowed_extra=_pretrain_extra)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc
    encoder.load_state_dict({k: v for k, v in sd.items() if k in encoder.state_dict()}, strict=True)
    return file_sha256(path)


def load_model(spec: str, stats: NormStats | str | Path | None = None, hub: HubCache = DEFAULT_HUB) -> LoadedModel:
    """Strictly loads a segmentation checkpoint named by a path or ``hf://`` spec.

    Args:
        spec: Local path or ``hf://<org>/<repo>[@rev]/<path>``.
        stats: Override of the normalisation statistics (object, built-in name or JSON path).
        hub: Hugging Face cache folder and offline flag for ``hf://`` specs (default:
            ``huggingface_hub``'s own choice, online).

    Raises:
        ModelLoadError: Unreadable file, a backbone-only file, or keys/shapes that do not match.
    """
    path = resolve_weights(spec, hub)
    try:
        parsed = parse_checkpoint(read_checkpoint(path))
        if parsed.kind == "backbone":
            raise ModelLoadError(
                "is a TerraMind backbone checkpoint (no decoder): fine-tune it first (glacial-lakes train)"
            )
        config = config_of(parsed)
        model = build_model(config)
        strict_load(model, parsed.state_dict, config)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{spec}: {exc}") from exc
    model.eval()
    if stats is not None:
        norm = stats if isinstance(stats, NormStats) else load_stats(stats)
    else:
        norm = parsed.stats or _sibling_stats(spec, path, hub) or load_stats()
    return LoadedModel(model, config, norm, file_sha256(path), spec, parsed.kind)


# --- writing -----------------------------------------------------------------------------------


def _atomic_save(obj: dict[str, Any], path: Path) -> Path:
    with atomic_path(path) as tmp:  # a crash never leaves a half-written checkpoint under the final name
        torch.save(obj, tmp)
    return path


def save_checkpoint(path: str | Path, model: nn.Module, config: ModelConfig, stats: NormStats, **meta: Any) -> Path:
    """Writes our Lightning-like checkpoint: ``state_dict`` (``model.`` prefix) + config + stats.

    ``meta`` (plain JSON-like values: epoch, metrics …) is stored under ``glacial_lakes``.
    """
    sd = {f"model.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}
    body = {"format": 1, "config": config.to_dict(), "stats": stats.to_dict(), **meta}
    obj = {
        "state_dict": sd,
        "epoch": int(meta.get("epoch", 0)),
        "global_step": int(meta.get("global_step", 0)),
        FORMAT_KEY: body,
    }
    return _atomic_save(obj, Path(path))


def write_release_checkpoint(path: str | Path, variant: str = "tiny", seed: int = 0, layout: str = "heavy") -> Path:
    """A random-init checkpoint in the CryoSentinel release layout (Lightning, ``model.`` keys).

    Like the release it carries no normalisation statistics of its own (CryoSentinel's apply).
    """
    torch.manual_seed(seed)
    config = ModelConfig(variant, layout, num_classes=1)
    model = build_model(config)
    sd = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    hparams = {
        "backbone": config.backbone,
        "modalities": list(config.modalities),
        "decoder": "UperNetDecoder",
        "decoder_kwargs": {"decoder_channels": 256, "decoder_scale_modules": layout == "heavy"},
    }
    obj = {"state_dict": sd, "epoch": 0, "global_step": 0, "hyper_parameters": hparams}
    return _atomic_save(obj, Path(path))
