"""models/: an acyclic import graph as drawn in its __init__, torch-free leaves, no environment reads, small modules."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import models
from models.baseline import SpectralBaseline
from models.segmenter import ArraySource, Segmenter

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "models"
LAYERS_ABOVE = ("tasks", "db", "flows", "demo")
TORCH_FREE = ("segmenter", "hub", "normalisation", "baseline", "registry", "runtime")
"""Modules that must import without torch (the registry imports the TerraMind modules lazily)."""


def _modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}


def _imports(path: Path) -> set[str]:
    """Every module named by an import in ``path``, at top level or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "models":  # from models import registry
                names |= {f"models.{alias.name}" for alias in node.names}
    return names


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {
        name: {n.split(".")[1] for n in _imports(path) if n.startswith("models.") and n.split(".")[1] in mods}
        for name, path in mods.items()
    }


def _drawn_graph() -> dict[str, set[str]]:
    """The graph drawn in models/__init__.py's docstring (``a -> b, (a note) c``; ``x, y -> (nothing in models)``)."""
    drawn: dict[str, set[str]] = {}
    for line in (models.__doc__ or "").splitlines():
        if "->" not in line:
            continue
        left, right = line.split("->")
        targets = set() if "nothing" in right else set(re.sub(r"\([^)]*\)", "", right).split(","))
        for name in left.split(","):
            drawn[name.strip()] = {t.strip() for t in targets if t.strip()}
    return drawn


def test_import_graph_has_no_cycle_lazy_imports_included() -> None:
    graph = _graph()
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            assert state.get(dep) != "open", f"import cycle: {' -> '.join([*path, node, dep])}"
            if dep not in state:
                visit(dep, [*path, node])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [])


def test_import_graph_is_the_one_drawn_in_the_package_docstring() -> None:
    """IMPORT GRAPH SYNC CONTRACT: an import added inside models/ is drawn in models/__init__.py too."""
    assert _drawn_graph() == _graph()


def test_models_never_import_the_layers_above_them() -> None:
    for name, path in _modules().items():
        upward = sorted(n for n in _imports(path) if n.split(".")[0] in LAYERS_ABOVE)
        assert not upward, f"models/{name}.py imports {upward}"


def test_torch_free_modules_and_the_baseline_path_do_not_load_torch() -> None:
    code = (
        "import sys\n"
        + "".join(f"import models.{m}\n" for m in TORCH_FREE)
        + "from models.registry import load_segmenter\n"
        + "load_segmenter('baseline')\n"
        + "heavy = sorted(m for m in ('torch', 'terratorch', 'huggingface_hub') if m in sys.modules)\n"
        + "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_no_module_reads_the_environment() -> None:
    """Settings (HF cache, offline flag, …) are read at the edge and passed down."""
    readers = {"environ", "environb", "getenv", "getenvb"}
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert not used & readers, f"models/{name}.py reads the environment ({sorted(used & readers)})"


def test_modules_stay_under_500_lines() -> None:
    for name, path in _modules().items():
        n = len(path.read_text(encoding="utf-8").splitlines())
        assert n < 500, f"models/{name}.py has {n} lines"


def test_every_segmenter_implements_the_whole_protocol() -> None:
    """SEGMENTER PROTOCOL SYNC CONTRACT (models/segmenter.py): each member exists on every segmenter class."""
    from models.inference import TerraMindSegmenter

    public = {n: v for n, v in vars(Segmenter).items() if not n.startswith("_")}
    members = {n for n, v in public.items() if callable(v) or isinstance(v, property)}
    assert {"name", "version", "predict", "iter_probability_rows"} <= members
    methods = sorted(n for n in members if callable(vars(Segmenter)[n]))
    for cls in (SpectralBaseline, TerraMindSegmenter):
        missing = sorted(n for n in methods if not callable(getattr(cls, n, None)))
        assert not missing, f"{cls.__name__} lacks {missing}"
    baseline = SpectralBaseline()
    assert isinstance(baseline, Segmenter)
    assert all(isinstance(getattr(baseline, n), str) for n in ("name", "version"))


def test_baseline_streams_the_same_probabilities_as_predict() -> None:
    rng = np.random.default_rng(0)
    h, w = 40, 30
    stack = np.concatenate(
        [rng.uniform(0, 4000, (12, h, w)), rng.uniform(-25, -5, (2, h, w)), rng.uniform(3000, 3010, (1, h, w))]
    ).astype(np.float32)
    valid = rng.random((h, w)) > 0.2
    blocks = list(SpectralBaseline().iter_probability_rows(ArraySource(stack, valid), progress=lambda d, t: None))
    assert [r0 for r0, _ in blocks] == [0]
    streamed = np.concatenate([b for _, b in blocks])
    assert streamed.dtype == np.float32 and streamed.shape == (h, w)
    np.testing.assert_array_equal(streamed, SpectralBaseline().predict(stack, valid))
    assert np.isnan(streamed[~valid]).all()


def test_baseline_strips_with_their_halo_equal_the_whole_scene() -> None:
    """Strips of 25 rows (the DEM with a halo of 67 rows each side) give the whole scene's probabilities exactly.

    On terrain where the slope and horizon guards decide: memory set by the strip, not the scene.
    """
    rng = np.random.default_rng(1)
    h, w = 300, 40
    yy, xx = np.mgrid[:h, :w]
    dem = 3000 + 400 * np.sin(yy / 23.0) * np.cos(xx / 17.0) + rng.normal(0, 2, (h, w))
    dem[120:140, 10:30] = 3000.0  # a flat, dark basin (water) under high ground
    s2 = rng.uniform(300, 3000, (12, h, w))
    s2[:, 120:140, 10:30] = 400.0
    stack = np.concatenate([s2, rng.uniform(-25, -5, (2, h, w)), dem[None]]).astype(np.float32)
    valid = rng.random((h, w)) > 0.1
    baseline = SpectralBaseline()
    seen: list[tuple[int, int]] = []
    blocks = list(
        baseline.iter_probability_rows(
            ArraySource(stack, valid), lambda d, t: seen.append((d, t)), strip_pixels=(25 + 67) * w
        )
    )
    assert [r0 for r0, _ in blocks] == list(range(0, h, 25)) and seen[-1] == (12, 12)
    streamed = np.concatenate([b for _, b in blocks])
    whole = baseline.predict(stack, valid)
    assert np.nanmax(whole) > 0.5 > np.nanmin(whole)  # both classes present: the test can tell
    np.testing.assert_array_equal(streamed, whole)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_every_module_starts_with_a_docstring(module: str) -> None:
    tree = ast.parse(_modules()[module].read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"models/{module}.py has no module docstring"
