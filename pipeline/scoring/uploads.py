"""Check an upload before anything is stored: the module parses, names one scorer, and its
requirements are PEP 508. Pure (reads the two files, never imports the module)."""

from __future__ import annotations

import ast
import getpass
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packaging.requirements import InvalidRequirement, Requirement

from pipeline.contracts.uploads import UploadedScorer
from pipeline.errors import ConfigError
from scorers.registry import builtin_names, reserved_names

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,99}$")
MAX_SOURCE_BYTES = 1024 * 1024


class UploadError(ConfigError):
    """An upload that cannot be stored; the message says what to change."""


@dataclass(frozen=True)
class Candidate:
    """A top-level scorer the module defines."""

    attribute: str
    kind: Literal["class", "function"]
    declared_name: str | None  # `name = "..."` of a class, `@scorer("...")` or the function's name
    subclassed: bool = False  # a base class of another scorer in the same module


def find_scorers(source: str, filename: str) -> list[Candidate]:
    """Top-level `Scorer` subclasses (also through a base class defined in the module) and
    `@scorer(...)` functions, in the order they are defined."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise UploadError(f"{filename} line {exc.lineno}: {exc.msg}; it must be valid Python") from None
    class_names, decorator_names = {"Scorer"}, {"scorer"}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "scorers":
            for alias in node.names:
                if alias.name == "Scorer":
                    class_names.add(alias.asname or alias.name)
                elif alias.name == "scorer":
                    decorator_names.add(alias.asname or alias.name)
    found: dict[str, Candidate] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(_names(base, class_names | set(found)) for base in node.bases):
            for base in node.bases:
                if isinstance(base, ast.Name) and base.id in found:
                    found[base.id] = Candidate(base.id, "class", found[base.id].declared_name, subclassed=True)
            found[node.name] = Candidate(node.name, "class", _class_name_literal(node))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and _names(decorator.func, decorator_names):
                    found[node.name] = Candidate(node.name, "function", _decorator_name(decorator) or node.name)
    return list(found.values())


def _names(expr: ast.expr, names: set[str]) -> bool:
    """`Scorer`, `scorers.Scorer`, `scorers.base.Scorer` (and the same for `scorer`)."""
    if isinstance(expr, ast.Name):
        return expr.id in names
    return isinstance(expr, ast.Attribute) and expr.attr in names


def _class_name_literal(node: ast.ClassDef) -> str | None:
    for stmt in node.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
        value = getattr(stmt, "value", None)
        if any(isinstance(t, ast.Name) and t.id == "name" for t in targets) and isinstance(value, ast.Constant):
            return value.value if isinstance(value.value, str) and value.value else None
    return None


def _decorator_name(call: ast.Call) -> str | None:
    args = [call.args[0]] if call.args else [k.value for k in call.keywords if k.arg == "name"]
    if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
        return args[0].value
    return None


def choose_entry(candidates: list[Candidate], filename: str, entry: str | None) -> Candidate:
    if entry is not None:
        for candidate in candidates:
            if candidate.attribute == entry:
                return candidate
        found = ", ".join(c.attribute for c in candidates) or "none"
        raise UploadError(f"--entry {entry}: {filename} has no top-level Scorer subclass or @scorer function "
                          f"named {entry!r} (found: {found})")
    if not candidates:
        raise UploadError(f"{filename} defines no scorer: add a subclass of scorers.Scorer or a function "
                          "decorated with @scorers.scorer(...) at the top level of the module")
    leaves = [c for c in candidates if not c.subclassed]
    if len(leaves) > 1:
        raise UploadError(f"{filename} defines several scorers ({', '.join(c.attribute for c in leaves)}); "
                          "choose one with --entry NAME")
    return leaves[0]


def parse_requirements(text: str, filename: str) -> list[str]:
    """One PEP 508 requirement per line; comments and blank lines are skipped. Normalized and sorted,
    so the same set in another order or spelling shares one venv."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        if line.startswith("-"):
            raise UploadError(f"{filename} line {number}: pip options ({line.split()[0]}) are not supported; "
                              "list one requirement per line, e.g. 'openai>=1.40'")
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise UploadError(f"{filename} line {number}: {line!r} is not a valid requirement ({exc}); "
                              "write one PEP 508 requirement per line, e.g. 'openai>=1.40'") from None
        found[str(requirement)] = None
    return sorted(found, key=str.lower)


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise UploadError(f"scorer name {name!r} is not valid: use letters, digits, '_', '-' or '.', starting "
                          "with a letter, at most 100 characters; choose one with --name")
    if name in reserved_names():
        kind = "a built-in scorer" if name in builtin_names() else "an installed entry-point scorer"
        raise UploadError(f"scorer name {name!r} is taken by {kind}; choose another with --name")
    return name


def build_upload(source_path: Path, requirements_path: Path | None = None, *, name: str | None = None,
                 entry: str | None = None, network: bool = False) -> UploadedScorer:
    """Validate the files and return the record to store; raises UploadError, storing nothing."""
    if source_path.suffix != ".py":
        raise UploadError(f"{source_path}: upload a Python module (a .py file)")
    source = _read(source_path, "scorer module")
    if len(source.encode()) > MAX_SOURCE_BYTES:
        raise UploadError(f"{source_path} is over {MAX_SOURCE_BYTES // 1024} KiB; a scorer is one module, "
                          "put libraries in requirements")
    chosen = choose_entry(find_scorers(source, source_path.name), source_path.name, entry)
    requirements = [] if requirements_path is None else parse_requirements(
        _read(requirements_path, "requirements file"), requirements_path.name)
    if name is None:
        name = chosen.declared_name if chosen.declared_name and NAME.match(chosen.declared_name) else source_path.stem
    return UploadedScorer(
        name=check_name(name), version=UploadedScorer.content_version(source, chosen.attribute, requirements, network),
        entry=chosen.attribute, kind=chosen.kind, filename=source_path.name, source=source,
        requirements=requirements, uploaded_at_ns=time.time_ns(), uploaded_by=_who(), network=network,
    )


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UploadError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UploadError(f"cannot read {what} {path}: {exc}") from None


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return socket.gethostname()
