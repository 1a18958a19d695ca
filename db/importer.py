"""Import an existing lake inventory (GeoJSON, GeoPackage, shapefile …) as a baseline epoch.

The file becomes one pseudo-scene merged with :func:`db.merge.merge_scene`, so it gets the same
identity matching, observations and derived history as a satellite scene, and re-importing the
same file for the same date and AOI is a no-op (ledger key = sha256 of the file bytes, layer,
date and AOI name).

Geometry handling: the layer must declare a CRS (any: it is reprojected to EPSG:4326); every
feature is repaired (:func:`db.geometry.as_multipolygon`: polygonal parts only, 2-D) and exploded
into polygons, one lake each; polygons smaller than ``min_area_m2`` are dropped. Areas,
perimeters (holes included) and centroids are measured in the UTM zone of a point on each
polygon (standard 6° zones, no Norway/Svalbard exceptions), or in ``utm_epsg`` for all when
given; each lake's record carries its outline in that UTM CRS (``ObservedLake.utm_epsg``), as a
scene's lakes do, and the merge projects it to EPSG:4326 for storage. The source
attributes (JSON-safe: NaN and NaT become null, dates ISO 8601) plus ``_fid`` (0-based
feature position in the layer) and, for multi-part features, ``_part`` go to
``lake_observation.attributes``.

The pseudo-scene's valid footprint is, by default, the union of the imported outlines: an
inventory is evidence of water where it maps lakes, not of dry ground elsewhere (it has a
minimum mapping unit and its own date), so it never marks other lakes absent. ``footprint=
"hull"`` uses the convex hull of the lakes instead (the inventory is taken as complete there).
It is formed in EPSG:4326 and handed to the merge in the AOI's UTM CRS.

AOI rules (the same as ``run``'s): the name follows :func:`core.names.check_aoi_name`. A new AOI
is the lakes' bounding box. Into an existing AOI, every lake must belong to it: its point on
surface (EPSG:4326) lies in the AOI's outline, else the whole import is refused, naming the AOI
and how many lakes fall outside, unless ``extend_aoi`` grows the outline by the lakes' bounding
box first (an inventory of another region must never merge into this one's history).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyogrio.errors
import shapely
from shapely import wkb
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Engine, func, select, text

from core.errors import AoiError, InputError, InventoryFileError
from core.names import check_aoi_name
from db.geometry import as_multipolygon, check_metric, lonlat_transformer, project, utm_epsg_for
from db.merge import ensure_aoi, merge_scene
from db.records import MergeReport, ObservedLake, SceneResult
from db.schema import SCHEMA, SRID, aoi
from db.volume import lake_volume

MIN_AREA_M2 = 1.0
"""Default smallest polygon kept, m² (drops slivers left by ``make_valid``, keeps every real lake)."""
MODEL_VERSION = "import"
_SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


@dataclass(frozen=True)
class InventoryLakes:
    """Lakes read from an inventory file (outlines and metres / m² in each lake's UTM CRS)."""

    lakes: tuple[ObservedLake, ...]
    outlines: tuple[Polygon, ...]
    """The lakes' outlines in EPSG:4326 as read (repaired, exploded), index-aligned with ``lakes``."""
    features: int
    """Features in the layer."""
    skipped_empty: int
    """Features with no geometry, or nothing polygonal left after repair."""
    skipped_small: int
    """Polygons below the minimum area."""
    source_crs: str


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_inventory` did."""

    scene_key: str
    aoi_name: str
    aoi_created: bool
    source_crs: str
    features: int
    lakes: int
    """Polygons handed to the merge (one lake observation each)."""
    skipped_empty: int
    skipped_small: int
    total_area_m2: float
    """Sum of the imported polygons' areas, m² (local UTM)."""
    merge: MergeReport
    attributes_written: int
    """Observation rows whose ``attributes`` JSON was (re)written; 0 on a re-import."""
    aoi_extended: bool = False
    """True when ``extend_aoi`` grew an existing AOI's outline to take in lakes outside it."""

    @property
    def noop(self) -> bool:
        """True when the file was already imported for this date and AOI."""
        return self.merge.noop


def json_safe(value: object) -> object:
    """A JSON value for one attribute: numpy scalars unwrapped, NaN/NaT → None, dates → ISO 8601."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float | Decimal):
        number = float(value)
        return number if math.isfinite(number) else None  # JSONB has no NaN
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_safe(v) for v in value]
    return str(value)


def _polygons(geometry: object) -> list[Polygon]:
    """Valid 2-D polygons of one feature (EPSG:4326); [] when nothing polygonal is left."""
    if geometry is None:
        return []
    repaired = as_multipolygon(geometry) if isinstance(geometry, BaseGeometry) else None
    return [] if repaired is None else list(repaired.geoms)


def _measure(
    polygons: Sequence[Polygon], epsg: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[MultiPolygon | None]]:
    """Measures EPSG:4326 polygons in ``epsg``.

    Returns area m², perimeter m, centroid lon and lat, and the outlines in ``epsg`` (None where
    nothing polygonal is left).
    """
    # Projection can pinch a ring that was valid in degrees; project() measures the repaired outline.
    projected = np.asarray(project(list(polygons), epsg), dtype=object)
    centroids = shapely.get_coordinates(shapely.centroid(projected))
    lon, lat = lonlat_transformer(epsg).transform(centroids[:, 0], centroids[:, 1])
    outlines = [as_multipolygon(g) for g in projected]
    return shapely.area(projected), shapely.length(projected), np.asarray(lon), np.asarray(lat), outlines


def read_inventory(
    path: Path, *, layer: str | None = None, utm_epsg: int | None = None, min_area_m2: float = MIN_AREA_M2
) -> InventoryLakes:
    """Read, reproject, repair, explode and measure the lakes of an inventory file.

    Args:
        path: a local vector file readable by pyogrio (GeoJSON, GeoPackage, shapefile …).
        layer: layer name for multi-layer formats; None reads the first layer.
        utm_epsg: metric CRS for every measurement; None measures each polygon in its own UTM zone.
        min_area_m2: polygons smaller than this (m², after repair) are dropped.

    Returns:
        The lakes (``elevation_m``, ``mean_probability``, ``probability_entropy``,
        ``surrounding_slope_deg``, ``perimeter_smoothed_m``, ``area_uncertainty_m2`` and
        ``volume_uncertainty_m3`` None: an inventory carries neither a DEM sample, a model
        probability nor its pixel size; ``volume_m3`` from the area) and counts of what was skipped.

    Raises:
        FileNotFoundError: ``path`` is not a regular file.
        core.errors.InventoryFileError: not a vector file, no such ``layer``, or the layer has
            no CRS (one-line message naming the file).
        core.errors.InputError: ``utm_epsg`` is not metric.
    """
    if not path.is_file():
        raise FileNotFoundError(f"inventory file not found: {path}")
    if utm_epsg is not None:
        check_metric(utm_epsg)
    frame = _read_layer(path, layer)
    if frame.crs is None:
        raise InventoryFileError(
            f"{path.name}: the layer has no CRS; assign one (e.g. ogr2ogr -a_srs) and import again"
        )
    source_crs = frame.crs.to_string()
    if frame.crs.to_epsg() != SRID:
        frame = frame.to_crs(SRID)
    properties = frame.drop(columns=frame.geometry.name).to_dict("records")

    polygons: list[Polygon] = []
    attributes: list[dict[str, object]] = []
    skipped_empty = 0
    for fid, (geometry, props) in enumerate(zip(frame.geometry, properties, strict=True)):
        parts = _polygons(geometry)
        if not parts:
            skipped_empty += 1
            continue
        base = {str(k): json_safe(v) for k, v in props.items()} | {"_fid": fid}
        for k, poly in enumerate(parts):
            polygons.append(poly)
            attributes.append(base | {"_part": k} if len(parts) > 1 else base)

    n = len(polygons)
    area, perimeter, lon, lat = (np.full(n, np.nan) for _ in range(4))
    outlines: list[MultiPolygon | None] = [None] * n
    zones = np.zeros(n, dtype=np.int64)
    if n:
        reps = shapely.get_coordinates(shapely.point_on_surface(np.asarray(polygons, dtype=object)))
        zones = np.full(n, utm_epsg) if utm_epsg else np.array([utm_epsg_for(x, y) for x, y in reps])
        for epsg in np.unique(zones):
            idx = np.flatnonzero(zones == epsg)
            *measured, projected = _measure([polygons[i] for i in idx], int(epsg))
            for column, values in zip((area, perimeter, lon, lat), measured, strict=True):
                column[idx] = values
            for i, outline in zip(idx.tolist(), projected, strict=True):
                outlines[i] = outline
    keep = [i for i in range(n) if area[i] >= min_area_m2 and outlines[i] is not None]
    lakes = tuple(
        ObservedLake(
            geometry=outlines[i],  # type: ignore[arg-type,unused-ignore]  # not None: kept above
            area_m2=float(area[i]),
            perimeter_m=float(perimeter[i]),
            centroid_lon=float(lon[i]),
            centroid_lat=float(lat[i]),
            elevation_m=None,
            mean_probability=None,  # no model: unknown, not 0 or 1
            # Vector outlines of unknown resolution and no DEM or model: only the volume, a
            # function of the area, is known (its uncertainty is not: the area's is unknown).
            perimeter_smoothed_m=None,
            area_uncertainty_m2=None,
            surrounding_slope_deg=None,
            probability_entropy=None,
            volume_m3=lake_volume(float(area[i]))[0],
            volume_uncertainty_m3=None,
            attributes=attributes[i],
            utm_epsg=int(zones[i]),
        )
        for i in keep
    )
    kept = tuple(polygons[i] for i in keep)
    return InventoryLakes(lakes, kept, len(frame), skipped_empty, n - len(keep), source_crs)


def _read_layer(path: Path, layer: str | None) -> gpd.GeoDataFrame:
    """The layer as a GeoDataFrame; GDAL's refusals (not vector, no such layer) as one line naming the file."""
    try:
        layers = [str(name) for name in pyogrio.list_layers(path)[:, 0]]
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise InventoryFileError(f"{path.name}: not a vector file GDAL can read ({_first_sentence(exc)})") from exc
    if not layers:
        raise InventoryFileError(f"{path.name}: the file holds no layer")
    if layer is not None and layer not in layers:
        shown = ", ".join(layers[:5]) + (f" … ({len(layers)} in all)" if len(layers) > 5 else "")
        raise InventoryFileError(f"{path.name}: no layer {layer!r} (layers: {shown})")
    try:
        return gpd.read_file(path, layer=layer, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, pyogrio.errors.FieldError) as exc:
        raise InventoryFileError(
            f"{path.name}: cannot read layer {layer or layers[0]!r}: {_first_sentence(exc)}"
        ) from exc


def _first_sentence(exc: BaseException) -> str:
    """GDAL's reason without its advice and without the full path (the file is already named)."""
    return str(exc).split(";")[0].strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


def _outside(aoi_outline: BaseGeometry, outlines: Sequence[Polygon]) -> int:
    """Lakes (EPSG:4326) whose point on surface is not in the AOI outline (EPSG:4326)."""
    points = shapely.point_on_surface(np.asarray(list(outlines), dtype=object))
    shapely.prepare(aoi_outline)
    return int(np.count_nonzero(~shapely.covers(aoi_outline, points)))


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes; for a shapefile, of its .shp/.shx/.dbf/.prj/.cpg parts in that order."""
    digest = hashlib.sha256()
    parts = [path]
    if path.suffix.lower() == ".shp":
        parts = [p for s in _SHAPEFILE_PARTS if (p := path.with_suffix(s)).is_file()]
    for part in parts:
        digest.update(part.suffix.lower().encode())
        with part.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _footprint(outlines: Sequence[Polygon], mode: str, utm_epsg: int) -> MultiPolygon | None:
    """The pseudo-scene's valid footprint, formed from the EPSG:4326 outlines, in ``utm_epsg``."""
    union = shapely.union_all(list(outlines))
    lonlat = as_multipolygon(union.convex_hull if mode == "hull" else union)
    return None if lonlat is None else as_multipolygon(project([lonlat], utm_epsg)[0])


# This scene's present observations with the measurements the merge copied from each lake
# (floats exact through float8): they find the feature each row came from.
_OBSERVATIONS = text(
    f"SELECT o.observation_id, o.area_m2, o.centroid_lon, o.centroid_lat FROM {SCHEMA}.lake_observation AS o "
    f"JOIN {SCHEMA}.scene AS s ON s.scene_id = o.scene_id WHERE s.scene_key = :key AND o.present "
    "ORDER BY o.observation_id"
)
_WRITE_ATTRIBUTES = text(
    f"UPDATE {SCHEMA}.lake_observation AS o SET attributes = r.a "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(id bigint, a jsonb) "
    "WHERE o.observation_id = r.id AND o.attributes IS DISTINCT FROM r.a RETURNING o.observation_id"
)


def _store_attributes(engine: Engine, scene_key: str, lakes: Sequence[ObservedLake]) -> int:
    """Write each lake's source attributes to its observation row; return the rows changed."""
    by_lake: dict[tuple[float, float, float], list[Mapping[str, object]]] = {}
    for lake in lakes:
        by_lake.setdefault((lake.area_m2, lake.centroid_lon, lake.centroid_lat), []).append(lake.attributes)
    with engine.begin() as conn:
        rows = []
        for observation_id, *measured in conn.execute(_OBSERVATIONS, {"key": scene_key}):
            if by_lake.get(key := tuple(measured)):  # twin features: attributes in file order
                rows.append({"id": int(observation_id), "a": by_lake[key].pop(0)})
        if not rows:
            return 0
        return len(conn.execute(_WRITE_ATTRIBUTES, {"rows": json.dumps(rows)}).all())


def import_inventory(
    engine: Engine,
    path: Path,
    *,
    aoi_name: str,
    when: datetime,
    utm_epsg: int | None = None,
    layer: str | None = None,
    min_area_m2: float = MIN_AREA_M2,
    footprint: Literal["lakes", "hull"] = "lakes",
    extend_aoi: bool = False,
) -> ImportReport:
    """Merge an inventory file into the database as the epoch ``when``.

    Args:
        engine: engine on a migrated inventory database (owner or writer role).
        path: inventory file (any CRS; see the module docstring for the geometry rules).
        aoi_name: AOI to merge into (``run``'s name rule); created from the lakes' bounding box
            (EPSG:4326) when missing, with ``utm_epsg`` or the UTM zone of the box centre as its
            grid CRS. An existing AOI is left unchanged unless ``extend_aoi``.
        when: the inventory's reference date (sensing time of the epoch); naive means UTC.
        utm_epsg: metric CRS for every area; None uses each lake's own UTM zone.
        layer: layer of a multi-layer file; None for the first.
        min_area_m2: smallest polygon kept, m².
        footprint: the epoch's valid footprint: ``"lakes"`` (union of the outlines) or ``"hull"``.
        extend_aoi: an existing AOI whose outline misses some lakes is grown by the lakes'
            bounding box (its grid CRS kept) instead of the import being refused.

    Returns:
        Counts, the total imported area (m²) and the merge report (``noop`` on a re-import).

    Raises:
        core.errors.InventoryFileError: not a vector file, no such layer, no CRS, or no polygon.
        core.errors.AoiError: a bad AOI name, or lakes outside the existing AOI (without ``extend_aoi``).
        core.errors.InputError: a bad ``utm_epsg`` / ``footprint``.
        FileNotFoundError: ``path`` is not a file.
    """
    check_aoi_name(aoi_name)
    if footprint not in ("lakes", "hull"):
        raise InputError(f"footprint must be 'lakes' or 'hull', not {footprint!r}")
    # A naive datetime is read as UTC, like every sensing time in the inventory.
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    read = read_inventory(path, layer=layer, utm_epsg=utm_epsg, min_area_m2=min_area_m2)
    if not read.lakes:
        raise InventoryFileError(f"{path.name}: no polygon of at least {min_area_m2} m² to import")
    content = file_digest(path)
    key_parts = (content, layer or "", when.isoformat(), aoi_name)
    scene_key = hashlib.sha256("\x1f".join(key_parts).encode()).hexdigest()
    params = {"min_area_m2": min_area_m2, "utm_epsg": utm_epsg, "footprint": footprint}
    params_hash = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()

    with engine.connect() as conn:
        known = conn.execute(select(aoi.c.utm_epsg, func.ST_AsBinary(aoi.c.geom)).where(aoi.c.name == aoi_name)).first()
    created, extended = known is None, False
    bounds = box(*shapely.total_bounds(list(read.outlines)))
    if known is None:
        aoi_epsg = utm_epsg or utm_epsg_for(bounds.centroid.x, bounds.centroid.y)
        ensure_aoi(engine, aoi_name, bounds, aoi_epsg)
    else:
        aoi_epsg, outline = int(known[0]), wkb.loads(bytes(known[1]))
        if outside := _outside(outline, read.outlines):
            if not extend_aoi:
                raise AoiError(
                    f"{path.name}: {outside} of {len(read.outlines)} lakes lie outside AOI {aoi_name!r}; "
                    "import into another AOI, or pass --extend-aoi to grow this one"
                )
            ensure_aoi(engine, aoi_name, shapely.union(outline, bounds), aoi_epsg)
            extended = True

    inputs = {"source": f"file:{path.name}", "sha256": content, "source_crs": read.source_crs}
    if layer:
        inputs["layer"] = layer
    result = SceneResult(
        scene_key=scene_key,
        aoi_name=aoi_name,
        sensing_time=when,
        s2_product_id=f"import:{path.name}",
        s1_product_id=None,
        dem_id=None,
        model_version=MODEL_VERSION,
        params_hash=params_hash,
        valid_footprint=_footprint(read.outlines, footprint, aoi_epsg),
        cloud_fraction=0.0,
        valid_fraction=1.0,
        lakes=read.lakes,
        inputs=inputs,
        utm_epsg=aoi_epsg,
    )
    report = merge_scene(engine, result)
    # A separate, idempotent transaction: a re-import fills in anything a crash here left out.
    written = _store_attributes(engine, scene_key, read.lakes)
    return ImportReport(
        scene_key=scene_key,
        aoi_name=aoi_name,
        aoi_created=created,
        source_crs=read.source_crs,
        features=read.features,
        lakes=len(read.lakes),
        skipped_empty=read.skipped_empty,
        skipped_small=read.skipped_small,
        total_area_m2=float(sum(lake.area_m2 for lake in read.lakes)),
        merge=report,
        attributes_written=written,
        aoi_extended=extended,
    )
