"""The code's shape that the architecture page promises: short functions, one writer, layers."""

from __future__ import annotations

import ast
import pickle
import sys
from pathlib import Path

import pytest

from dcutmix.config import REPO_ROOT
from dcutmix.errors import ConfigError, InputError
from dcutmix.store.results import RunResult, Status

PACKAGE = REPO_ROOT / "dcutmix"
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                where = f"{_name(path)}:{node.name}"
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{where} ({lines} lines)")
    assert long == []


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in _modules()}


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Every module ``path`` imports (inside functions too), as absolute dotted names.

    ``from package import name`` counts as an import of ``package.name`` when that is one of
    the project's modules, else of ``package``.
    """
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return found


def _imported_dcutmix_modules(path: Path) -> set[str]:
    return {name for name in _imports(path) if name.startswith("dcutmix")}


def test_no_import_circle_even_counting_imports_inside_functions():
    graph = {
        name: _imported_dcutmix_modules(path) & MODULES.keys() for name, path in MODULES.items()
    }
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if target == name:
                continue  # a script running its importable twin (python -m dcutmix.train)
            if state.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state and target != name:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_the_top_of_the_package_keeps_only_what_ties_the_layers_together():
    modules = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= 6, modules


def test_every_package_says_what_it_owns_and_may_import():
    undocumented = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        is_layer = init.parent.parent == PACKAGE and init.parent.name in LAYERS
        if not doc or (is_layer and "May import" not in doc):
            undocumented.append(_name(init))
    assert undocumented == []


#: the packages that are layers of the architecture (docs/ARCHITECTURE.md), each with its rule
LAYERS = ("mixing", "run", "store", "sweep", "bench")


def test_no_module_is_longer_than_600_lines_and_no_mixing_file_than_400():
    long = {
        _name(path): n
        for path in _modules()
        if (n := len(path.read_text().splitlines())) > (400 if "mixing" in path.parts else 600)
    }
    assert long == {}


#: the modules that may import Hydra: the entry point, the config schema and the sweep side's CLIs
HYDRA_USERS = {
    "dcutmix.config",
    "dcutmix.train",
    "dcutmix.sweep.cli",
    "dcutmix.sweep.launcher",
    "dcutmix.sweep.points",
    "dcutmix.sweep.precheck",
    "dcutmix.sweep.hydra_private",
    # the searching sweeper (hydra/sweeper=dcutmix_optuna) is a Hydra Sweeper and reads overrides
    # with Hydra's parser; hydra_plugins/dcutmix_sweeper only names it
    "dcutmix.sweep.search",
}


def test_hydra_is_imported_by_the_listed_modules_only_and_its_internals_by_one():
    users = {name for name, path in MODULES.items() if any(
        i == "hydra" or i.startswith("hydra.") for i in _imports(path)
    )}  # fmt: skip
    assert users <= HYDRA_USERS
    internal = {name for name, path in MODULES.items() if "hydra._internal" in path.read_text()}
    assert internal == {"dcutmix.sweep.hydra_private"}


def _outside(name: str, allowed: tuple[str, ...]) -> set[str]:
    """What module ``name`` imports of the project beyond the ``allowed`` prefixes."""
    return {
        i for i in _imported_dcutmix_modules(MODULES[name])
        if not any(i == a or i.startswith(a + ".") for a in allowed)
    }  # fmt: skip


def test_the_mixing_library_imports_torch_and_itself_only():
    for name, path in MODULES.items():
        if name.startswith("dcutmix.mixing"):
            allowed = ("dcutmix.mixing", "dcutmix.errors", "dcutmix.store.files")
            assert _outside(name, allowed) == set(), name
            third_party = {
                i.split(".")[0] for i in _imports(path) if not i.startswith("dcutmix")
            } - set(sys.stdlib_module_names)
            assert third_party <= {"torch"}, name


def test_storage_and_the_report_stay_below_the_run_and_the_sweep():
    for name in MODULES:
        if name.startswith("dcutmix.store"):
            assert _outside(name, ("dcutmix.store", "dcutmix.errors")) == set(), name
        if name.startswith("dcutmix.report"):
            imported = _imports(MODULES[name])
            assert not {i for i in imported if i.split(".")[0] in ("torch", "hydra")}, name


def test_the_gpu_check_imports_only_the_standard_library_before_it_finds_its_dependencies():
    for name in ("dcutmix", "dcutmix.bench", "dcutmix.bench.gpu_check"):
        top = {i.split(".")[0] for i in _imports(MODULES[name], top_level_only=True)}
        assert top - {"__future__"} <= set(sys.stdlib_module_names), name


def test_the_engine_depends_on_nothing_above_it():
    allowed = {"dcutmix.run.losses", "dcutmix.run.progress", "dcutmix.run.seeding"}
    assert _imported_dcutmix_modules(PACKAGE / "run" / "engine.py") <= allowed


def test_nothing_imports_the_engine_but_the_run_and_the_benchmarks():
    users = {
        _name(path)
        for path in _modules()
        if "dcutmix.run.engine" in _imported_dcutmix_modules(path)
    }
    assert users <= {
        "dcutmix/run/lifecycle.py",
        "dcutmix/bench/train.py",
        "dcutmix/bench/gpu_pipelines.py",
    }


@pytest.mark.parametrize("call", ["os.replace", "savefig", "torch.save", "mkstemp"])
def test_only_the_files_module_replaces_or_saves_files(call):
    writers = {_name(p) for p in _modules() if call + "(" in p.read_text()}
    assert writers <= {"dcutmix/store/files.py"}


def test_an_input_error_carries_its_key_and_reads_as_one_line():
    error = InputError("mixing.k", "must be an integer, got 'five'")
    assert (error.key, error.message) == ("mixing.k", "must be an integer, got 'five'")
    assert str(error) == "mixing.k: must be an integer, got 'five'"
    # The one-string form of earlier callers still yields the key, and the old name still works.
    legacy = ConfigError("ckpt: /x.pt is not a file")
    assert (legacy.key, legacy.message) == ("ckpt", "/x.pt is not a file")
    assert isinstance(legacy, InputError | ValueError)
    # Jobs on Slurm hand exceptions back pickled.
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.key, str(copy)) == ("mixing.k", str(error))


def test_statuses_are_written_as_their_words():
    import json

    assert json.dumps({"status": Status.INTERRUPTED}) == '{"status": "interrupted"}'
    assert f"{Status.NOT_STARTED}" == str(Status.NOT_STARTED) == "not started"
    assert Status.COMPLETED == "completed"


def test_a_run_result_keeps_the_results_json_key_order():
    running = RunResult(Status.RUNNING, epochs=3, device="cpu", world_size=1).to_json()
    assert list(running)[:5] == [
        "status", "epochs_completed", "epochs", "top1_err_last", "top1_err_best",
    ]  # fmt: skip
    assert list(running)[-2:] == ["device", "world_size"]
    assert "eval_only" not in running and "diverged_epoch" not in running
    early = RunResult.failed_early("boom", 3, "r", None).to_json()
    assert list(early) == [
        "status", "error", "epochs_completed", "epochs", "run_name", "config", "hostname", "pid",
    ]  # fmt: skip


def test_the_sweep_side_reaches_a_run_only_through_its_folder():
    for name in MODULES:
        if name.startswith("dcutmix.sweep"):
            imported = _imported_dcutmix_modules(MODULES[name])
            assert not {i for i in imported if i.startswith(("dcutmix.run", "dcutmix.mixing"))}
