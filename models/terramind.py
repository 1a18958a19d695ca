"""TerraMind v1 segmentation models built through terratorch's ``EncoderDecoderFactory``.

Two decoder layouts share one neck (``SelectIndices`` → ``ReshapeTokensToImage`` →
``LearnedInterpolateToPyramidal``) and a ``UperNetDecoder`` with 256 channels:

* ``heavy``: the decoder's deprecated ``scale_modules`` are on as well, so the FPN runs at the
  full 224² resolution. This is the CryoSentinel release layout: its checkpoint loads only
  into exactly this module tree. About 300 GFLOP per window for the decoder alone.
* ``light``: neck only (terratorch's recommendation), about 27 GFLOP per window with the tiny
  backbone. Use it for models of our own.

Heads: one class (a sigmoid logit) or two classes (softmax; water is class 1). Either way the
model's output is reduced to one *binary logit* per pixel, ``logit(p_water)``, so blending and
test-time augmentation work on the same quantity for both head styles.

The backbone is always built with ``pretrained=False``: nothing is downloaded here. Weights
come from :mod:`models.checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "LAYOUTS",
    "MODALITIES",
    "VARIANTS",
    "ModelConfig",
    "VariantSpec",
    "binary_logits",
    "build_model",
    "forward_binary_logits",
    "split_modalities",
]

MODALITIES: tuple[str, ...] = ("S2L2A", "S1GRD", "DEM")
"""TerraMind modality names, in stack order: 12 S2 bands, VV+VH, DEM."""

_MODALITY_BANDS: tuple[int, ...] = (12, 2, 1)

LAYOUTS: tuple[str, ...] = ("heavy", "light")


@dataclass(frozen=True)
class VariantSpec:
    """Shape facts of one TerraMind v1 encoder (terratorch ``terramind_register.py``)."""

    dim: int
    depth: int
    neck_indices: tuple[int, ...]
    """Blocks tapped for the pyramid: four evenly spaced (CryoSentinel's choice per depth)."""


VARIANTS: dict[str, VariantSpec] = {
    "tiny": VariantSpec(192, 12, (2, 5, 8, 11)),
    "small": VariantSpec(384, 12, (2, 5, 8, 11)),
    "base": VariantSpec(768, 12, (2, 5, 8, 11)),
    "large": VariantSpec(1024, 24, (5, 11, 17, 23)),
}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a TerraMind segmenter; everything needed to rebuild its module tree.

    Attributes:
        variant: ``tiny`` | ``small`` | ``base`` | ``large``.
        layout: ``heavy`` (CryoSentinel release, UperNet scale modules on) or ``light``.
        num_classes: 1 (sigmoid head) or 2 (softmax head, water = class 1).
        decoder_channels: UperNet channels.
        modalities: Backbone modalities, in stack order.
        merge_method: How modality tokens combine per patch (terratorch default ``mean``).
    """

    variant: str = "tiny"
    layout: str = "light"
    num_classes: int = 1
    decoder_channels: int = 256
    modalities: tuple[str, ...] = field(default=MODALITIES)
    merge_method: str = "mean"

    def __post_init__(self) -> None:
        """Rejects unknown variants, layouts and head sizes with a one-line reason."""
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown TerraMind variant {self.variant!r}; use one of {sorted(VARIANTS)}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown decoder layout {self.layout!r}; use one of {LAYOUTS}")
        if self.num_classes not in (1, 2):
            raise ValueError(f"num_classes must be 1 (sigmoid) or 2 (softmax), got {self.num_classes}")
        object.__setattr__(self, "modalities", tuple(self.modalities))
        if self.modalities != MODALITIES:
            raise ValueError(f"modalities must be {MODALITIES} (the stack's order), got {self.modalities}")

    @property
    def backbone(self) -> str:
        """The terratorch registry name, e.g. ``terramind_v1_tiny``."""
        return f"terramind_v1_{self.variant}"

    @property
    def spec(self) -> VariantSpec:
        """Encoder shape facts of :attr:`variant`."""
        return VARIANTS[self.variant]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a file from a newer format)."""
        known = set(cls.__dataclass_fields__)
        extra = set(data) - known
        if extra:
            raise ValueError(f"unknown model config keys: {sorted(extra)}")
        return cls(**{**data, "modalities": tuple(data.get("modalities", MODALITIES))})

    @property
    def config_hash(self) -> str:
        """First 12 hex of the sha256 of the canonical JSON: stable across processes."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def build_model(config: ModelConfig) -> nn.Module:
    """A randomly initialised terratorch ``PixelWiseModel`` for ``config`` (no download).

    The module tree (and so the state-dict keys) is exactly what the CryoSentinel release
    builds for ``layout="heavy"``.
    """
    # Importing terratorch runs its Clay backbone module, which lowers torch's process-wide float32
    # matmul precision to "medium": bf16 matmuls on CPUs with AVX512-BF16/AMX, |Δ logit| ~1e-3 against
    # float32. The caller's precision (torch's default "highest") is put back.
    precision = torch.get_float32_matmul_precision()
    from terratorch.models import EncoderDecoderFactory

    torch.set_float32_matmul_precision(precision)
    necks = [
        {"name": "SelectIndices", "indices": list(config.spec.neck_indices)},
        {"name": "ReshapeTokensToImage", "remove_cls_token": False},  # TerraMind has no CLS token
        {"name": "LearnedInterpolateToPyramidal"},
    ]
    with warnings.catch_warnings():
        # terratorch flags scale_modules as deprecated; the heavy layout needs it on purpose.
        warnings.filterwarnings("ignore", message=".*scale_modules is deprecated.*")
        model: nn.Module = EncoderDecoderFactory().build_model(
            task="segmentation",
            backbone=config.backbone,
            backbone_pretrained=False,
            backbone_modalities=list(config.modalities),
            backbone_merge_method=config.merge_method,
            necks=necks,
            decoder="UperNetDecoder",
            decoder_channels=config.decoder_channels,
            decoder_scale_modules=config.layout == "heavy",
            num_classes=config.num_classes,
        )
    return model


def split_modalities(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``(B, 15, H, W)`` normalised stack → ``{"S2L2A": (B,12,..), "S1GRD": (B,2,..), "DEM": (B,1,..)}``."""
    if x.ndim != 4 or x.shape[1] != sum(_MODALITY_BANDS):
        raise ValueError(f"expected (B, {sum(_MODALITY_BANDS)}, H, W), got {tuple(x.shape)}")
    parts = torch.split(x, list(_MODALITY_BANDS), dim=1)
    return dict(zip(MODALITIES, parts, strict=True))


def binary_logits(output: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Model output → ``(B, H, W)`` logit of P(water).

    One class: the logit itself (terratorch squeezes ``(B,1,H,W)`` to ``(B,H,W)``). Two classes:
    ``z1 − z0``, because ``softmax(z)[1] = sigmoid(z1 − z0)``.
    """
    if num_classes == 1:
        return output[:, 0] if output.ndim == 4 else output
    if output.ndim != 4 or output.shape[1] != 2:
        raise ValueError(f"a 2-class head must give (B, 2, H, W), got {tuple(output.shape)}")
    return output[:, 1] - output[:, 0]


def forward_binary_logits(model: nn.Module, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Runs ``model`` on a normalised ``(B, 15, H, W)`` batch; returns ``(B, H, W)`` logits."""
    out = model(split_modalities(x))
    out = out.output if hasattr(out, "output") else out
    return binary_logits(out, num_classes)
