"""A whole Sentinel-2 tile through every stage with the spectral baseline, beside the machine's raw limits.

The tile is synthetic: the demo generator's 2048 px world (seed 0) repeated into ``--tile-px``
square files (10980: one S2 tile, about 12,000 km²), every S2 band, S1 and DEM file of one of its
scenes, written as tiled deflate GeoTIFFs on the same grid origin; the scene's plan
(:class:`tasks.pairing.ScenePlan`) is the demo's with those files. Each stage runs in a child
process of its own (spawned), through the stages' public functions, so its peak RSS is its own:

- ``prepare``: :func:`tasks.scene.prepare_stack` (read, warp, co-register, mask, write the stack);
- ``segment``: :func:`tasks.segment.segment_stack` with the spectral baseline;
- ``extract``: :func:`tasks.scene.extract_lakes` (threshold, vectorise, attribute, footprint);
- ``merge``: :func:`db.merge.merge_scene` into a private PostGIS (fsync off, migrated to head).

Beside them, measured in the same run on the same files: ``raw_read_warp`` (every input file
read and warped onto the tile's grid with rasterio alone, band by band, GDAL's defaults) and
``raw_to_postgis`` (``GeoDataFrame.to_postgis`` appending the same lakes to a plain table). The
pipeline runs again on the tile's first 2048 px (the demo scene itself) with the baseline, and,
unless ``--skip-model``, with the default TerraMind model (``--tta`` for flip TTA).

"Non-model" stages are prepare, extract and merge. Areas: pixels × 100 m². Stack bytes: every
file ``prepare`` wrote. A line per stage, then one JSON object (the last line) go to stdout.

    .venv/bin/python benchmarks/tile_scale.py --tile-px 4096 --work /tmp/tile-bench   # from the project root
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import shapely  # noqa: E402
from rasterio.enums import Resampling  # noqa: E402
from rasterio.vrt import WarpedVRT  # noqa: E402
from rasterio.windows import Window  # noqa: E402
from shapely.geometry import Polygon, box  # noqa: E402

from tasks.acquisition import Acquisition  # noqa: E402
from tasks.grid import GridSpec  # noqa: E402
from tasks.pairing import ScenePlan  # noqa: E402

WORLD_PX = 2048
"""Side of the generated world the tile repeats, pixels (10 m); also the crop's side (``--world-px``)."""
PIXEL_KM2 = 1e-4
"""One 10 m pixel, km²."""
BLOCK = 512
"""Block side of the tile's GeoTIFFs, pixels."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _log(message: str) -> None:
    print(f"» {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# The synthetic tile
# ---------------------------------------------------------------------------------------


def _lonlat_outline(grid: GridSpec) -> Polygon:
    """The grid's outline, EPSG:4326 (its corners, projected)."""
    from pyproj import Transformer

    a, _, c, _, e, f = grid.transform
    to_lonlat = Transformer.from_crs(grid.epsg, 4326, always_xy=True)
    outline = box(c, f + e * grid.height, c + a * grid.width, f)
    return shapely.transform(outline, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))


def _demo_plan(world: Path, world_px: int) -> tuple[ScenePlan, Any]:
    """The demo world's clearest scene plan (lowest cloud cover) and its AOI outline (EPSG:4326)."""
    from demo.synthetic import generate_demo_catalog
    from flows.aoi import load_aoi
    from tasks.defaults import MAX_PAIR_DAYS
    from tasks.pairing import pair_scenes
    from tasks.search_window import search_for_pairing
    from tasks.sources import source_from_uri

    if not (world / "catalog.json").exists():  # a work folder's world is kept: minutes to generate at 2048 px
        _log(f"generating the {world_px} px demo world under {world}")
        generate_demo_catalog(world, size_px=world_px)
    aoi = load_aoi(world / "aoi.geojson", None)
    source = source_from_uri(f"local:{world}")
    kinds = ("S2L2A", "S1GRD", "S1RTC", "DEM")
    found = search_for_pairing(source, aoi.shape, date(1990, 1, 1), date(2100, 1, 1), kinds, MAX_PAIR_DAYS)
    plans, _ = pair_scenes(found, aoi.shape)
    if not plans:
        sys.exit(f"{world}: the demo catalog paired no scene")
    return min(plans, key=lambda p: (p.s2.cloud_cover or 0.0, p.s2.product_id)), aoi.shape


def _tile_file(src_path: str, out: Path, scale: float) -> None:
    """``src_path`` repeated (its own width and height as the period) over ``scale`` × its size, by blocks."""
    with rasterio.open(src_path) as src:
        data = src.read()
        profile = src.profile.copy()
        width, height = math.ceil(src.width * scale), math.ceil(src.height * scale)
        tags = src.tags()
        descriptions = src.descriptions
        band_tags = [src.tags(i + 1) for i in range(src.count)]
    profile.update(
        driver="GTiff", width=width, height=height, tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate"
    )
    profile.pop("photometric", None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.update_tags(**tags)
        for i, (description, btags) in enumerate(zip(descriptions, band_tags, strict=True)):
            if description:
                dst.set_band_description(i + 1, description)
            dst.update_tags(i + 1, **btags)
        for row in range(0, height, BLOCK):
            for col in range(0, width, BLOCK):
                h, w = min(BLOCK, height - row), min(BLOCK, width - col)
                rows = np.arange(row, row + h) % data.shape[1]
                cols = np.arange(col, col + w) % data.shape[2]
                dst.write(data[:, rows[:, None], cols[None, :]], window=Window(col, row, w, h))


def _tiled(acq: Acquisition, folder: Path, scale: float, footprint: Any) -> Acquisition:
    folder.mkdir(parents=True, exist_ok=True)
    assets = []
    for key, href in acq.assets:
        out = folder / f"{acq.product_id}-{key}.tif"
        if not out.exists():
            partial = out.with_suffix(".partial.tif")
            _tile_file(href, partial, scale)
            partial.replace(out)
        assets.append((key, str(out)))
    return replace(acq, assets=tuple(assets), footprint=footprint)


def build_tile(work: Path, tile_px: int, world_px: int = WORLD_PX) -> tuple[ScenePlan, GridSpec, GridSpec]:
    """The tile's plan, its grid and its first ``world_px`` crop's grid (the demo scene's grid, same origin)."""
    from tasks.zones import partition_aoi

    plan, outline = _demo_plan(work / f"world-{world_px}", world_px)
    world_grid = partition_aoi(outline).parts[0].grid
    a, b, c, d, e, f = world_grid.transform
    tile_grid = GridSpec(world_grid.epsg, (a, b, c, d, e, f), tile_px, tile_px)
    crop_grid = GridSpec(world_grid.epsg, (a, b, c, d, e, f), min(world_px, tile_px), min(world_px, tile_px))
    # Each file repeats with its own extent as the period: the tile's side over the world grid's.
    scale = tile_px / world_grid.width + 0.05  # a little beyond the grid, as real inputs reach
    footprint = _lonlat_outline(tile_grid)
    folder = work / f"tile-{tile_px}-of-{world_px}"
    _log(f"writing the {tile_px} px tile's inputs under {folder}")
    started = time.perf_counter()
    tiled = ScenePlan(
        s2=_tiled(plan.s2, folder, scale, footprint),
        s1=_tiled(plan.s1, folder, scale, footprint),
        dems=tuple(_tiled(d, folder, scale, footprint) for d in plan.dems),
    )
    _log(f"tile inputs ready in {time.perf_counter() - started:.1f} s")
    return tiled, tile_grid, crop_grid


# ---------------------------------------------------------------------------------------
# Stages, each in a child process
# ---------------------------------------------------------------------------------------


def _peak_gb() -> float:
    """This process's peak resident memory, GB.

    ``VmHWM`` (Linux): reset by the child's ``exec``, whereas ``ru_maxrss`` starts a child at its
    parent's size at the fork, which would hide a small stage behind the parent's imports.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux, the fallback


def _stage_prepare(plan: ScenePlan, grid: GridSpec, out_dir: Path) -> tuple[Any, float, float]:
    from tasks.scene import prepare_stack

    t = time.perf_counter()
    stack = prepare_stack(plan, grid, out_dir)
    return stack, time.perf_counter() - t, _peak_gb()


def _stage_segment(stack: Any, model: str, out: Path, tta: bool) -> tuple[tuple[Path, str], float, float]:
    """The probability COG and the model's version (what the merge records)."""
    from models.registry import load_segmenter
    from tasks.segment import segment_stack

    t = time.perf_counter()
    path = segment_stack(stack, model, out, tta)
    return (path, load_segmenter(model, tta).version), time.perf_counter() - t, _peak_gb()


def _stage_extract(stack: Any, probability: Path) -> tuple[Any, float, float]:
    from tasks.defaults import MIN_LAKE_AREA_M2, WATER_THRESHOLD
    from tasks.scene import extract_lakes

    t = time.perf_counter()
    extracted = extract_lakes(stack, probability, WATER_THRESHOLD, MIN_LAKE_AREA_M2)
    return extracted, time.perf_counter() - t, _peak_gb()


def _stage_merge(
    url: str, plan: ScenePlan, grid: GridSpec, stack: Any, probability: Path, extracted: Any, model_version: str
) -> tuple[Any, float, float]:
    """The scene's record built as a run builds it (:func:`flows.scene.scene_result`), then merged."""
    from db.engine import make_engine
    from db.merge import ensure_aoi, merge_scene
    from db.records import MergeConfig
    from flows.scene import SceneContext, scene_result
    from models.hub import DEFAULT_HUB
    from tasks.defaults import MIN_LAKE_AREA_M2, WATER_THRESHOLD
    from tasks.pairing import scene_key
    from tasks.validity import cloud_state_of
    from tasks.zones import ZonePart, ZonePartition

    outline = _lonlat_outline(grid)
    part = ZonePart(grid.epsg, outline, grid)
    name = f"tile-{grid.width}"
    ctx = SceneContext(
        aoi_name=name,
        partition=ZonePartition((part,), 0.0),
        data_dir=probability.parent,
        model=model_version,
        model_version=model_version,
        tta=False,
        hub=DEFAULT_HUB,
        threshold=WATER_THRESHOLD,
        min_area_m2=MIN_LAKE_AREA_M2,
        merge_config=MergeConfig(),
    )
    key = scene_key(plan, model_version, ctx.params, name)
    # What flows.scene.observation_inputs records (that one logs through Prefect's run logger).
    observation = {"cloud_state": cloud_state_of(stack.cloud_fraction), "s2_offset": stack.s2_offset.describe()}
    t = time.perf_counter()
    engine = make_engine(url)
    ensure_aoi(engine, name, outline, grid.epsg)
    result = scene_result(plan, ctx, part, key, stack, probability, extracted, observation)
    report = merge_scene(engine, result, MergeConfig())
    seconds = time.perf_counter() - t
    engine.dispose()
    return report, seconds, _peak_gb()


def _raw_read_warp(plan: ScenePlan, grid: GridSpec) -> tuple[int, float, float]:
    """Every input file read and warped onto ``grid`` with rasterio alone, one band at a time."""
    from rasterio.crs import CRS
    from rasterio.transform import Affine

    hrefs = [h for _, h in plan.s2.assets] + [h for _, h in plan.s1.assets] + list(plan.dem_hrefs)
    t = time.perf_counter()
    for href in hrefs:
        with rasterio.open(href) as src:
            nearest = "SCL" in Path(href).name
            with WarpedVRT(
                src,
                crs=CRS.from_epsg(grid.epsg),
                transform=Affine(*grid.transform),
                width=grid.width,
                height=grid.height,
                resampling=Resampling.nearest if nearest else Resampling.bilinear,
            ) as vrt:
                for band in range(1, src.count + 1):
                    vrt.read(band)
    return len(hrefs), time.perf_counter() - t, _peak_gb()


def _raw_to_postgis(url: str, extracted: Any, epsg: int) -> tuple[int, float, float]:
    """``to_postgis`` appending the scene's lakes (outline, area, elevation) to a plain table."""
    import geopandas as gpd

    from db.engine import make_engine

    lakes = extracted.lakes
    gdf = gpd.GeoDataFrame(
        {"area_m2": [lake.area_m2 for lake in lakes], "elevation_m": [lake.elevation_m for lake in lakes]},
        geometry=[lake.geometry for lake in lakes],
        crs=epsg,
    )
    engine = make_engine(url)
    t = time.perf_counter()
    gdf.to_postgis("bench_raw_lakes", engine, if_exists="append", index=False)
    seconds = time.perf_counter() - t
    engine.dispose()
    return len(gdf), seconds, _peak_gb()


def _in_child(fn: Callable[..., tuple[Any, float, float]], *args: Any) -> tuple[Any, float, float]:
    """``fn(*args)`` in a fresh spawned process: (its result, its seconds, that process's peak RSS in GB)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_pipeline(
    label: str, url: str, plan: ScenePlan, grid: GridSpec, out: Path, model: str, tta: bool
) -> dict[str, Any]:
    """Prepare → segment → extract → merge on ``grid``; seconds, km²/min and peak RSS per stage."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    km2 = grid.width * grid.height * PIXEL_KM2
    stages: dict[str, dict[str, float]] = {}

    def record(stage: str, seconds: float, peak: float) -> None:
        stages[stage] = {
            "s": round(seconds, 2),
            "km2_per_min": round(km2 / seconds * 60, 1),
            "peak_rss_gb": round(peak, 3),
        }
        print(f"{label:>14} {stage:>8}: {seconds:8.2f} s  {km2 / seconds * 60:9.1f} km²/min  peak RSS {peak:6.2f} GB")

    stack, seconds, peak = _in_child(_stage_prepare, plan, grid, out / "stack")
    stack_bytes = _bytes_under(out / "stack")
    record("prepare", seconds, peak)
    (probability, version), seconds, peak = _in_child(_stage_segment, stack, model, out / "probability.tif", tta)
    record("segment", seconds, peak)
    extracted, seconds, peak = _in_child(_stage_extract, stack, probability)
    record("extract", seconds, peak)
    report, seconds, peak = _in_child(_stage_merge, url, plan, grid, stack, probability, extracted, version)
    record("merge", seconds, peak)
    non_model = sum(stages[s]["s"] for s in ("prepare", "extract", "merge"))
    return {
        "label": label,
        "px": grid.width,
        "km2": round(km2, 1),
        "stages": stages,
        "non_model_s": round(non_model, 2),
        "peak_rss_gb": max(s["peak_rss_gb"] for s in stages.values()),
        "stack_bytes": stack_bytes,
        "stack_bytes_per_km2": round(stack_bytes / km2),
        "lakes": len(extracted.lakes),
        "merged": str(report)[:200],
        "extracted": extracted,
    }


def _start_database(root: Path) -> tuple[Any, str]:
    from db.local_cluster import LocalCluster, ensure_postgis_installed
    from db.migrate import upgrade

    ensure_postgis_installed()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # the postgres user must enter it when we are root
    cluster = LocalCluster(root / "pg", _free_port(), ("fsync=off", "synchronous_commit=off", "full_page_writes=off"))
    cluster.initialise()
    cluster.start()
    url = cluster.admin_url("postgres")
    upgrade(url, "head")
    return cluster, url


def main() -> None:
    """Build (or reuse) the tile, run the stages and the raw limits, print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile-px", type=int, default=10980, help="side of the synthetic tile, pixels (10 m)")
    parser.add_argument("--skip-model", action="store_true", help="no TerraMind run on the 2048 px crop")
    parser.add_argument("--tta", action="store_true", help="flip TTA for the TerraMind run (4 passes a window)")
    parser.add_argument("--world-px", type=int, default=WORLD_PX, help="side of the generated world (and the crop)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (kept; tile inputs reused)")
    args = parser.parse_args()
    if args.tile_px < 256:
        sys.exit(f"--tile-px {args.tile_px}: use at least 256")
    work = args.work or Path(tempfile.mkdtemp(prefix="gl-tile-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GLACIAL_LAKES_HOME", str(work / "home"))
    plan, tile_grid, crop_grid = build_tile(work, args.tile_px, args.world_px)
    db_root = Path(tempfile.mkdtemp(prefix="gl-tile-pg-"))
    cluster, url = _start_database(db_root)
    try:
        full = run_pipeline(f"tile {args.tile_px}", url, plan, tile_grid, work / "run-tile", "baseline", False)
        files, raw_s, raw_peak = _in_child(_raw_read_warp, plan, tile_grid)
        print(f"{'raw':>14} read+warp {raw_s:7.2f} s  ({files} files, peak RSS {raw_peak:.2f} GB)")
        n, pg_s, _ = _in_child(_raw_to_postgis, url, full["extracted"], tile_grid.epsg)
        print(f"{'raw':>14} to_postgis {pg_s:6.2f} s  ({n} lakes)")
        crop = run_pipeline(f"crop {crop_grid.width}", url, plan, crop_grid, work / "run-crop", "baseline", False)
        model = None
        if not args.skip_model:
            model = run_pipeline("crop default", url, plan, crop_grid, work / "run-model", "default", args.tta)
    finally:
        cluster.stop()
        shutil.rmtree(db_root, ignore_errors=True)
    ratios = {
        "non_model_over_raw_read_warp": round(full["non_model_s"] / raw_s, 2),
        "prepare_over_raw_read_warp": round(full["stages"]["prepare"]["s"] / raw_s, 2),
        "merge_over_raw_to_postgis": round(full["stages"]["merge"]["s"] / pg_s, 2),
        "peak_rss_over_2048": round(full["peak_rss_gb"] / crop["peak_rss_gb"], 3),
    }
    for name, value in ratios.items():
        print(f"{'ratio':>14} {name}: {value}")
    summary: dict[str, Any] = {
        "tile_px": args.tile_px,
        "tile_km2": full["km2"],
        "peak_rss_gb": full["peak_rss_gb"],
        "peak_rss_2048_gb": crop["peak_rss_gb"],
        "non_model_s": full["non_model_s"],
        "raw_read_warp_s": round(raw_s, 2),
        "raw_to_postgis_s": round(pg_s, 2),
        "stack_bytes_per_km2": full["stack_bytes_per_km2"],
        "lakes": full["lakes"],
        "lakes_2048": crop["lakes"],
        "stages": full["stages"],
        "stages_2048": crop["stages"],
        "ratios": ratios,
        "cpus": os.cpu_count(),
    }
    if model is not None:
        summary["model_2048"] = {k: model[k] for k in ("stages", "peak_rss_gb", "lakes")}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
