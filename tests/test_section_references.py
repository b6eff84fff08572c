"""Every public function and class of ``course_lib.topics`` (and ``course_lib.core.layers``) names the chapter section
that teaches it, as ``chapter NN, X`` or ``chapter NN, X.Y`` in its docstring, and that section heading exists.

The link is checked in both directions: a renamed or renumbered heading breaks the reference (this test fails and
says which headings the chapter has now), and every chapter 01-13 must be referenced by at least one topic.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import course_lib.topics

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
REFERENCE = re.compile(r"[Cc]hapter (\d\d), ([A-Z](?:\.\d+)?)\b")
# Headings as the chapters write them: "# ## A. The forward process" and "# ### A.2 The closed form ...".
SECTION_HEADING = re.compile(r"^# ## ([A-Z])\. ")
SUBSECTION_HEADING = re.compile(r"^# ### ([A-Z]\.\d+) ")
TAUGHT_CHAPTERS = sorted(p.name[:2] for p in CHAPTERS.glob("[0-9][0-9]_*.py") if p.name[:2] != "00")

MODULE_NAMES = sorted(f"course_lib.topics.{info.name}" for info in pkgutil.iter_modules(course_lib.topics.__path__))
MODULE_NAMES.append("course_lib.core.layers")


def public_objects(module_name: str) -> list[tuple[str, object]]:
    """The public top-level functions and classes defined in the module itself (not imported into it)."""
    module = importlib.import_module(module_name)
    return [(name, obj) for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and getattr(obj, "__module__", None) == module_name]


PUBLIC = [(module_name, name, obj) for module_name in MODULE_NAMES for name, obj in public_objects(module_name)]


def chapter_file(number: str) -> Path | None:
    matches = sorted(CHAPTERS.glob(f"{number}_*.py"))
    return matches[0] if matches else None


_HEADINGS: dict[str, list[str]] = {}


def chapter_headings(number: str) -> list[str]:
    """Section labels ("A", "A.2", ...) of the headings of chapter ``number``, in order."""
    if number not in _HEADINGS:
        labels = []
        for line in chapter_file(number).read_text(encoding="utf-8").splitlines():
            match = SECTION_HEADING.match(line) or SUBSECTION_HEADING.match(line)
            if match:
                labels.append(match.group(1))
        _HEADINGS[number] = labels
    return _HEADINGS[number]


def references(obj) -> list[tuple[str, str]]:
    return REFERENCE.findall(inspect.getdoc(obj) or "")


def test_the_modules_have_public_objects():
    assert len(MODULE_NAMES) > 20 and len(PUBLIC) > 200, (MODULE_NAMES, len(PUBLIC))


@pytest.mark.parametrize("module_name, name, obj", PUBLIC, ids=[f"{m.rsplit('.', 1)[1]}.{n}" for m, n, _ in PUBLIC])
def test_docstring_names_an_existing_section(module_name, name, obj):
    refs = references(obj)
    assert refs, (f"{module_name}.{name}: its docstring names no chapter section; add one such as "
                  f"'Chapter 11, G.2.' (regex {REFERENCE.pattern!r})")
    for number, label in refs:
        reference = f"chapter {number}, {label}"
        path = chapter_file(number)
        assert path is not None, (f"{module_name}.{name}: '{reference}' names chapter {number}, but there is no "
                                  f"chapters/{number}_*.py")
        headings = chapter_headings(number)
        assert label in headings, (f"{module_name}.{name}: '{reference}' names a section that {path.name} does not "
                                   f"have (headings '# ## X.' / '# ### X.Y' found: {', '.join(headings)})")


def test_module_docstrings_name_their_chapter():
    missing = [name for name in MODULE_NAMES
               if not re.search(r"[Cc]hapters? \d\d", importlib.import_module(name).__doc__ or "")]
    assert not missing, f"module docstrings that name no chapter: {missing}"


def test_every_chapter_is_referenced_by_a_topic():
    referenced: dict[str, list[str]] = {}
    for module_name, name, obj in PUBLIC:
        for number, _ in references(obj):
            referenced.setdefault(number, []).append(f"{module_name}.{name}")
    missing = [number for number in TAUGHT_CHAPTERS if number not in referenced]
    assert not missing, (f"chapters that no public topic function or class references: {missing}; "
                         f"referenced: {sorted(referenced)}")
    for number in TAUGHT_CHAPTERS:
        assert chapter_file(number) is not None, f"chapter {number} has no chapters/{number}_*.py"
