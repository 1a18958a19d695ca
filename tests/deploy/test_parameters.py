"""Served and deployed runs rebuild each flow's parameter model in a fresh process.

The bug: with ``from __future__ import annotations`` in a flow module, every served run failed
in a second ("``Rolling_UpdateModel`` is not fully defined; you should define ``AoiSpec``"). Here
each entry point of ``deploy/prefect.yaml`` is loaded the way a worker loads it, in a child
process, its parameter schema built (what the UI renders as a form) and parameters validated.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import ROOT, child_env

ENTRYPOINTS = sorted(
    {d["entrypoint"] for d in yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())["deployments"]}
)
_AOI = {
    "name": "schema-check",
    "geometry": {"type": "Polygon", "coordinates": [[[77.05, 43.03], [77.06, 43.03], [77.06, 43.04], [77.05, 43.03]]]},
}
_PARAMS = {
    "flows.update_inventory.update_inventory": {"aoi": _AOI, "source": "local:/nowhere", "days": 3},
    "flows.backfill.backfill": {
        "aoi": _AOI,
        "source": "local:/nowhere",
        "start": "2024-07-01",
        "end": "2024-09-30",
        "order": "oldest-first",
    },
}
_CHILD = textwrap.dedent(
    """
    import json, sys
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema
    flow = load_flow_from_entrypoint(sys.argv[1], use_placeholder_flow=False)
    schema = parameter_schema(flow).model_dump()
    params = flow.validate_parameters(json.loads(sys.argv[2]))
    print(json.dumps({"schema": schema, "types": {k: type(v).__name__ for k, v in params.items()}}))
    """
)


def _module_path(entrypoint: str) -> Path:
    return ROOT / Path(*entrypoint.split(".")[:-1]).with_suffix(".py")


@pytest.mark.parametrize("entrypoint", sorted(_PARAMS))
def test_parameter_model_builds_in_a_fresh_process(entrypoint: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, entrypoint, json.dumps(_PARAMS[entrypoint])],
        cwd=tmp_path,  # not the checkout: the package is found on PYTHONPATH, as on a worker
        env=child_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    schema = out["schema"]
    # A typed form: the AOI is its pydantic model, dates are dates, the look-back is bounded.
    assert schema["properties"]["aoi"]["$ref"] == "#/definitions/AoiSpec"
    assert set(schema["definitions"]["AoiSpec"]["required"]) == {"name", "geometry"}
    assert schema["properties"]["start"].get("format") == "date" or any(
        alt.get("format") == "date" for alt in schema["properties"]["start"].get("anyOf", [])
    )
    assert out["types"]["aoi"] == "AoiSpec"
    if entrypoint.endswith("update_inventory"):
        assert schema["required"] == ["aoi", "source"]  # start and end default to the rolling window
        assert schema["properties"]["days"]["minimum"] == 1
    else:
        assert out["types"]["start"] == "date" and out["types"]["order"] == "BackfillOrder"


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
def test_deployed_flow_modules_do_not_postpone_annotations(entrypoint: str) -> None:
    """Entry points are module paths, and their modules resolve annotations at definition time."""
    path = _module_path(entrypoint)
    if entrypoint == "flows.rerun.rerun" and not path.exists():
        pytest.skip("rerun flow not in this branch")
    assert path.exists(), f"{entrypoint}: no module {path.relative_to(ROOT)}"
    tree = ast.parse(path.read_text())
    future = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    assert not any(a.name == "annotations" for n in future for a in n.names), path.name
