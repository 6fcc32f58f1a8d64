"""Generated code: in sync with codegen/, standalone, and the very code nlc.compile runs."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import torch

import nlc
from nlc.lower.emit import emit
from nlc.ir.resolve import resolve
from nlc.graph.validate import load_spec

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted(p.stem for p in (ROOT / "specs").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # generated headers and comments name specs by relative path


@pytest.mark.parametrize("name", SPECS)
def test_codegen_folder_is_in_sync(name):
    expected = (ROOT / "codegen" / f"{name}.py").read_text(encoding="utf-8")
    assert emit(resolve(load_spec(f"specs/{name}.yaml"))) == expected, (
        f"codegen/{name}.py is stale: see codegen/README.md to regenerate")


@pytest.mark.parametrize("name", SPECS)
def test_generated_module_imports_only_the_runtime(name):
    """``nlc.runtime`` is all an emitted module needs (an unused ``import torch`` is gone)."""
    tree = ast.parse((ROOT / "codegen" / f"{name}.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{a.name}" for a in node.names}
    assert imported == {"nlc.runtime"}


def test_emitted_file_imported_fresh_equals_compiled_model(tmp_path):
    path = tmp_path / "hope_generated.py"
    model = nlc.compile("specs/hope.yaml")
    path.write_text(model.source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("hope_generated", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = module.Model()
    fresh.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 256, (2, 48), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fresh(tokens, targets=tokens)[0], model(tokens, targets=tokens)[0],
                               rtol=0, atol=0)


def test_every_layer_line_names_its_spec_level_and_yaml_line():
    source = nlc.compile("specs/titans_mal.yaml").source
    calls = [line for line in source.splitlines() if line.strip().startswith("x, state[")]
    assert len(calls) == 6
    for line in calls:
        assert "# 'lmm' (specs/titans_mal.yaml:" in line or "# 'swa' (" in line or "# 'mlp' (" in line


def test_source_without_a_schedule_fails_clearly():
    """A model generated before the update schedule existed (no Model.SCHEDULE) names the fix
    instead of failing inside the teach loop."""
    from nlc.compiler import load_source
    from nlc.errors import NLCError

    source = emit(resolve(load_spec("specs/cms.yaml", ["model.width=16", "model.heads=2"])))
    start = source.index("    SCHEDULE = rt.UpdateSchedule(")
    end = source.index("\n    )\n", start) + len("\n    )\n")
    model = load_source(source[:start] + source[end:]).Model()
    x = torch.randint(0, 256, (1, 8))
    model(x)  # no teach signal: the schedule is not needed
    with pytest.raises(NLCError, match="no update schedule"):
        model(x, targets=x)


def test_compile_hands_over_declared_attributes_and_patches_nothing() -> None:
    """What ``nlc.compile`` returns keeps its spec, IR, source and graph in attributes the
    model class declares, and ``compile="default"`` leaves the model's own ``run`` in place
    (the compiled pass is held beside it), so hooks and the eager probe see the same class."""
    from nlc.runtime.model import NLCModel

    spec = load_spec("transformer", ["model.width=32"])
    model = nlc.compile(spec, seed=0, compile="default")
    assert {"spec", "ir", "source", "graph"} <= set(NLCModel.__annotations__)
    assert model.spec is spec and model.ir.name == "transformer" and model.source == emit(resolve(spec))
    assert set(model.graph.nodes) >= set(spec.levels)
    assert "run" not in vars(model) and type(model).run is NLCModel.run
    assert model._compiled_run is not None


@pytest.mark.parametrize("name", SPECS)
def test_the_emitted_constants_are_the_ir(name):
    """The compact form (defaults left out, a twin level as ``rt.replace``, ``rt.INFINITE``)
    rebuilds exactly the resolved IR: every ``LEVEL_`` constant equals its IR node, and the
    schedule equals the IR's."""
    from nlc.compiler import load_source
    from nlc.lower.emit import constant
    from nlc.schedule import UpdateSchedule

    ir = resolve(load_spec(f"specs/{name}.yaml"))
    module = load_source(emit(ir))
    constants = {key: value for key, value in vars(module).items() if key.startswith("LEVEL_")}
    assert constants, name
    for level in ir.levels:
        if constant(level) in constants:
            assert constants.pop(constant(level)) == ir.levels[level], level
    assert not constants  # every constant is a level's
    assert module.Model.SCHEDULE == UpdateSchedule.from_ir(ir)
