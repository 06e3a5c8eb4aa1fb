"""The package's layering: old import paths still work, and importing a layer does not pull in the layers
above it (lint-imports checks the static graph in `make test`; these check what actually loads)."""

import importlib
import subprocess
import sys

import pytest

# (path users imported from before the data moved into gen/data, its home now). The core's old root modules
# (gen.backbones, gen.sampling, gen.hooks, gen.prediction, gen.tiling) are gone: gen.core.* and `gen` itself.
MOVED = [
    ("gen.training.tissue", "reference_image", "gen.data.tissue"),
    ("gen.training.tissue", "random_patches", "gen.data.tissue"),
    ("gen.training.data", "digits", "gen.data.digits"),
    ("gen.training.data", "TensorImageDataset", "gen.data.dataset"),
    ("gen.training.conditions", "ConditionEmbeddingPerturbation", "gen.conditioning"),
    ("gen", "Denoiser", "gen.core.denoiser"),
    ("gen", "sample", "gen.core.sampling"),
]


@pytest.mark.parametrize("old, name, new", MOVED, ids=[f"{o}.{n}" for o, n, _ in MOVED])
def test_old_import_paths_give_the_same_objects(old, name, new):
    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(m for m in sys.modules if m == 'gen' or m.startswith('gen.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.slow
@pytest.mark.parametrize(
    "statement, above",
    [
        ("import gen", ("gen.pipelines", "gen.training", "gen.zoo", "gen.guidance", "gen.embedders")),
        ("import gen.embedders", ("gen.zoo", "gen.training", "gen.pipelines")),
        ("import gen.pipelines", ("gen.zoo", "gen.training")),
        ("import gen.zoo", ("gen.training",)),
        ("import gen.data", ("gen.training", "gen.zoo", "gen.pipelines")),
    ],
)
def test_a_layer_loads_nothing_above_it(statement, above):
    loaded = _loaded_after(statement)
    assert not {m for m in loaded if m.startswith(above)}, sorted(loaded)


@pytest.mark.slow
def test_named_models_resolve_without_importing_the_zoo_first():
    code = "from gen.embedders import load_embedder; e = load_embedder('zoo:patch-encoder'); print(e.width)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "64"


@pytest.mark.slow
@pytest.mark.parametrize("statement", ["import gen", "import gen.pipelines, gen.guidance, gen.zoo"])
def test_importing_gen_prints_nothing(statement):
    done = subprocess.run([sys.executable, "-c", statement], capture_output=True, text=True, check=True)
    assert done.stdout == "" and done.stderr == "", (done.stdout, done.stderr)
