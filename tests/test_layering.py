"""Upper layers call lower ones, never the reverse (imports inside functions included)."""

import ast
from pathlib import Path

import vitprint

ROOT = Path(vitprint.__file__).parent
# evaluation.metrics (arrays in, numbers out) and evaluation.plots (figures) import nothing of vitprint:
# they are leaves every layer may use, training's loss curves and validation metrics included.
LEAVES = ("evaluation.metrics", "evaluation.plots")
LAYERS = [
    ("errors", "progress", "device", "distributed", "config", "data", "models", *LEAVES),
    ("training", "inference"),
    ("membership", "detection", "attribution"),
    ("evaluation",),
    ("api",),
    ("cli", "demo", "benchmark", "attribution_bench", "__main__", "__init__"),
]


def _layer(module: str) -> int:
    top = module if module in LEAVES else module.split(".")[0]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"module {module!r} has no layer: add it to LAYERS")


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "vitprint":  # from vitprint import distributed
            for alias in node.names:
                if (ROOT / f"{alias.name}.py").is_file() or (ROOT / alias.name).is_dir():
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vitprint"):
            yield node.module.removeprefix("vitprint").lstrip("."), node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("vitprint."):
                    yield alias.name.removeprefix("vitprint."), node.lineno


def test_no_import_runs_back_up_a_layer():
    problems = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
        own = _layer(rel)
        for target, line in _imports(path):
            if target and _layer(target) > own:
                problems.append(f"{rel}:{line} imports vitprint.{target}")
    assert not problems, "\n".join(problems)


def test_the_check_would_catch_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from vitprint.cli import main\n")
    assert [t for t, _ in _imports(bad)] == ["cli"] and _layer("cli") > _layer("membership")
    bad.write_text("from vitprint import api, __version__\n")
    assert [t for t, _ in _imports(bad)] == ["api"]


def test_the_leaves_import_nothing_of_vitprint():
    for leaf in LEAVES:
        path = ROOT / (leaf.replace(".", "/") + ".py")
        assert list(_imports(path)) == [], leaf


def test_the_report_renders_and_never_runs_a_model():
    targets = [t for t, _ in _imports(ROOT / "evaluation" / "report.py")]
    assert not [t for t in targets if t.split(".")[0] in ("inference", "models", "training", "membership")], targets


def test_library_errors_name_settings_not_command_line_flags():
    """The CLI adds its flags for an error's ``settings``; the library's own words never name one."""
    import re

    problems = []
    for path in ROOT.rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "VitprintError" and node.args:
                text = "".join(c.value for c in ast.walk(node.args[0])
                               if isinstance(c, ast.Constant) and isinstance(c.value, str))
                if re.search(r"(^|[\s(/'])--[a-z]", text):
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text[:60]}")
    assert not problems, "\n".join(problems)
