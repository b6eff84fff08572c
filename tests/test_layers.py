"""course_lib's layout: the layers of ``.importlinter`` hold (and a break of them is caught), no import cycles,
chapters never import the tools, and every shipped checkpoint has its record in course_lib.zoo."""
import ast
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """Run import-linter on the ``course_lib`` found in ``root`` (with the repository's contracts)."""
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy in root shadows the installed course_lib
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_layers_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, bad_import, contract", [
    ("core/profiles.py", "import course_lib.topics.vit", "layered like the course"),
    ("eval/fid.py", "from course_lib.zoo import load_shipped", "layered like the course"),
    ("topics/vae.py", "from course_lib.topics.diffusion import NoiseSchedule", "earlier chapters"),
])
def test_a_break_of_the_layers_is_caught(tmp_path, module, bad_import, contract):
    """A deliberate violation in a scratch copy of course_lib fails the check, naming the contract."""
    shutil.copytree(ROOT / "course_lib", tmp_path / "course_lib", ignore=shutil.ignore_patterns("checkpoints", "files",
                                                                                                   "__pycache__"))
    target = tmp_path / "course_lib" / module
    target.write_text(target.read_text() + f"\n{bad_import}  # a deliberate break of the layers\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0 and "BROKEN" in result.stdout and contract in result.stdout, result.stdout


def _imports_of(path: Path, package_root: Path) -> set[str]:
    """The course_lib modules a file imports (absolute imports, at any depth of the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("course_lib"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("course_lib"):
            for alias in node.names:  # "from course_lib.topics import vit" imports the module course_lib.topics.vit
                candidate = f"{node.module}.{alias.name}"
                module_file = package_root.parent / (candidate.replace(".", "/") + ".py")
                names.add(candidate if module_file.is_file() else node.module)
    return names


def test_no_import_cycles():
    package = ROOT / "course_lib"
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in package.rglob("*.py")}
    graph = {name: {i for i in _imports_of(path, package) if i in modules and i != name} for name, path in modules.items()}
    state = {}

    def visit(name, trail):
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                cycle = trail[trail.index(other):] + [other] if other in trail else [name, other]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if other not in state:
                visit(other, trail + [other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state and not name.endswith("__init__") and "." in name:
            visit(name, [name])


def test_chapters_never_import_the_tools():
    for chapter in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py")):
        imported = _imports_of(chapter, ROOT / "course_lib")
        assert not any(name.startswith("course_lib.tools") for name in imported), f"{chapter.name} imports the tools"


def test_every_shipped_checkpoint_has_one_record():
    from course_lib.core.checkpointing import read_manifest
    from course_lib.zoo import MODELS

    shipped = set(read_manifest())
    assert shipped == set(MODELS), f"shipped without a record: {shipped - set(MODELS)}; records without weights: " \
                                   f"{set(MODELS) - shipped}"
    for name, record in MODELS.items():
        assert record.name == name and record.__class__.__name__ == "ShippedModel"
        assert (ROOT / "course_lib" / "zoo" / f"{name}.py").is_file(), f"the record of {name} is not in zoo/{name}.py"


def test_every_topic_is_in_the_chapter_contract():
    """A new topic module must take its place in the chapter order, or import-linter would not check it."""
    import pkgutil

    import course_lib.topics

    contract = (ROOT / ".importlinter").read_text().split("[importlinter:contract:chapters]", 1)[1]
    listed = set(re.findall(r"course_lib\.topics\.(\w+)", contract))
    modules = {info.name for info in pkgutil.iter_modules(course_lib.topics.__path__)}
    assert modules <= listed, f"add {sorted(modules - listed)} to the chapters contract of .importlinter, in chapter order"
