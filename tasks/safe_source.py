"""``safe:DIR``: a folder of SAFE products on disk, as an acquisition source.

The products are the entries of ``DIR`` (not its subfolders) named ``*.SAFE`` (folders) or
``*.zip`` (files holding one ``<name>.SAFE`` folder); each is recognised by its ``manifest.safe``
and read by its mission: ``S2?_MSIL2A_*`` by :mod:`tasks.safe_s2`, ``S1?_*_GRD?_*`` by
:mod:`tasks.safe_s1`. Any other ``.SAFE`` / ``.zip`` entry (L1C, SLC, …) is refused, named, as
are products that fail their reader's checks: a folder of products is the user's input.

SAFE products hold no elevation: the DEM comes from a static STAC catalog at ``DIR/dem``
(``DIR/dem/catalog.json``, read like ``local:DIR/dem``, DEM items only). It is required: a
``safe:`` source without it is refused when checked, before any flow starts, instead of every
scene ending "no DEM covering the AOI".

Entries are resolved (symlinks included) and must stay inside ``DIR``; zip members are vetted
(:mod:`tasks.safe_files`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from core.errors import SafeProductError, SourceError
from tasks.acquisition import Acquisition, AcquisitionSource, filter_acquisitions
from tasks.safe_files import open_product
from tasks.safe_s1 import s1_acquisition
from tasks.safe_s2 import s2_acquisition

__all__ = ["DEM_CATALOG_DIR", "SafeSource"]

DEM_CATALOG_DIR = "dem"
"""The folder of ``DIR`` holding the static STAC catalog the DEM is read from."""

_S2_L2A = re.compile(r"S2[A-D]_MSIL2A_")
_S1_GRD = re.compile(r"S1[A-D]_[A-Z0-9]{2}_GRD[HMF]_")


@dataclass(frozen=True)
class SafeSource:
    """A folder of SAFE products (``safe:DIR``); the DEM from the catalog at ``DIR/dem``."""

    root: Path
    dem: AcquisitionSource
    """The static catalog at ``DIR/dem`` (``tasks.sources`` builds it: a ``LocalStacSource``)."""

    @property
    def name(self) -> str:
        """The source URI, ``safe:DIR``."""
        return f"safe:{self.root}"

    def product_paths(self) -> list[Path]:
        """The ``*.SAFE`` folders and ``*.zip`` files of the root, resolved, sorted by name.

        Raises:
            SourceError: the root is not a folder, or an entry resolves outside it.
        """
        if not self.root.is_dir():
            raise SourceError(f"safe:{self.root}: not a folder of SAFE products")
        base = Path(os.path.realpath(self.root))
        found = []
        for entry in sorted(self.root.iterdir()):
            if not (entry.name.upper().endswith(".SAFE") or entry.name.lower().endswith(".zip")):
                continue
            real = Path(os.path.realpath(entry))
            if not real.is_relative_to(base):
                raise SourceError(f"safe:{self.root}: {entry.name} resolves to {real}, outside the folder")
            found.append(real)
        return found

    def products(self, kinds: Sequence[str] | None = None) -> list[Acquisition]:
        """The acquisitions of every product (of ``kinds`` when given: ``S2L2A``, ``S1GRD``).

        Raises:
            SafeProductError: a product is unusable or of a type that is not read (named).
        """
        out = []
        for path in self.product_paths():
            name = path.name
            if _S2_L2A.match(name):
                kind = "S2L2A"
            elif _S1_GRD.match(name):
                kind = "S1GRD"
            else:
                raise SafeProductError(
                    f"SAFE product {path}: not a Sentinel-2 L2A (S2?_MSIL2A_…) or Sentinel-1 GRD (S1?_*_GRD?_…) product"
                )
            if kinds is not None and kind not in kinds:
                continue
            product = open_product(path)
            if product.product_id != name.removesuffix(".zip").removesuffix(".SAFE"):
                raise SafeProductError(f"SAFE product {path}: holds {product.name}, not the product its name says")
            read = s2_acquisition if kind == "S2L2A" else s1_acquisition
            out.append(read(product, self.name))
        return out

    def check(self) -> None:
        """Reads every product and the DEM catalog; SourceError / SafeProductError naming the input."""
        self.products()
        self._dems(box(-180, -90, 180, 90))

    def _dems(self, aoi: BaseGeometry) -> list[Acquisition]:
        dem_root = self.root / DEM_CATALOG_DIR
        if not (dem_root / "catalog.json").is_file():
            raise SourceError(
                f"safe:{self.root}: no DEM catalog at {dem_root / 'catalog.json'}; SAFE products carry no "
                "elevation, so a safe: source needs a static STAC catalog with the DEM tiles there"
            )
        dems = self.dem.search(aoi, date.min, date.max, ["DEM"])
        if not dems and aoi.equals(box(-180, -90, 180, 90)):
            raise SourceError(f"safe:{self.root}: the DEM catalog at {dem_root} holds no DEM item")
        return dems

    def search(self, aoi: BaseGeometry, start: date, end: date, kinds: Sequence[str]) -> list[Acquisition]:
        """Acquisitions of ``kinds`` intersecting ``aoi`` (EPSG:4326) sensed in [start, end] (DEM: any time)."""
        found = self.products(kinds)
        if "DEM" in kinds:
            found += self._dems(aoi)
        return filter_acquisitions(found, aoi, start, end, kinds)
