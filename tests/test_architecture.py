"""The house rules, checked on the code's own imports (docs/design.md, "Where things live").

- No import cycle between modules, counting every import: at module level,
  inside functions (lazy imports) and under TYPE_CHECKING; nor between packages.
- Parts import one way: the core (`whystream/` but its CLI) imports no part;
  `streams/` (the worker) and `infra/` (the embedded stack) build on the core
  only; `jobs/` (sink, ClickHouse, analytics, simulation, demo) on the core and
  `infra/`; the CLI (`whystream/cli/`) composes everything.
- No module longer than MAX_LINES.
- Every Kafka client is made in whystream/kafka/clients.py, and the environment is
  read in one place, Settings.load (whystream/config/settings.py).

`python tests/test_architecture.py` prints the graph in numbers: modules,
imports, imports between parts, cycles.
"""

from __future__ import annotations

import ast
import collections
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 450
# part -> the parts it may import (besides itself)
ALLOWED = {
    "core": set(),
    "infra": {"core"},
    "streams": {"core"},
    "jobs": {"core", "infra"},
    "cli": {"core", "infra", "streams", "jobs"},
    "schemas": set(),
}


def package_dirs() -> dict[str, Path]:
    """Top-level package name -> its folder, as pyproject.toml maps them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {package: ROOT / folder for package, folder in config.items()}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the installed packages."""
    found: dict[str, Path] = {}
    dirs = package_dirs()
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            # a folder mapped to its own package (whystream.streams) is not part of its parent's folder
            if any(name.startswith(other + ".") or name == other for other in dirs
                   if other != package and other.startswith(package + ".") and dirs[other] != folder):
                continue
            found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that module `name` imports, anywhere in its file."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from a.b import c`: the module a.b.c if there is one, else a name in a.b
            candidates = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for candidate in candidates:
            parts = candidate.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and ".".join(parts) != name:
                targets.add(".".join(parts))
    return targets


def graph() -> tuple[dict[str, Path], dict[str, set[str]]]:
    known = modules()
    return known, {name: imports(name, path, known) for name, path in known.items()}


def part(module: str) -> str:
    pieces = module.split(".")
    if pieces[0] != "whystream":
        return pieces[0]
    if module == "whystream.__main__":  # `python -m whystream`: the CLI's entry point
        return "cli"
    if len(pieces) > 1 and pieces[1] in ("streams", "jobs", "infra", "schemas", "cli"):
        return pieces[1]
    return "core"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def part_edges(edges: dict[str, set[str]]) -> collections.Counter:
    return collections.Counter((part(a), part(b)) for a, targets in edges.items() for b in targets
                               if part(a) != part(b))


def test_no_module_imports_itself_back():
    _, edges = graph()
    assert cycles(edges) == []


def package(module: str) -> str:
    """The package a module belongs to, one level below its part: whystream.kafka, whystream.streams.sampling."""
    pieces = module.split(".")
    return ".".join(pieces[:3] if pieces[1:2] in (["streams"], ["jobs"]) else pieces[:2])


def test_no_package_imports_itself_back():
    """Inside the parts too: the core's packages layer as errors < config < wire < kafka <
    treeshap < models < explanations, and no package of streams/ or jobs/ needs one that needs it."""
    _, edges = graph()
    between: dict[str, set[str]] = {}
    for a, targets in edges.items():
        between.setdefault(package(a), set()).update(package(b) for b in targets if package(b) != package(a))
    assert cycles(between) == []


def test_parts_import_one_way():
    _, edges = graph()
    wrong = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                   if part(a) != part(b) and part(b) not in ALLOWED[part(a)])
    assert wrong == []


def test_no_part_imports_the_part_that_imports_it():
    counts = part_edges(graph()[1])
    assert [(a, b) for (a, b) in counts if (b, a) in counts] == []


def test_every_package_is_installed():
    """pyproject.toml lists the packages one by one (the folders map to subpackages): a new folder
    missing there would be left out of the wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert {name for name, path in modules().items() if path.name == "__init__.py"} == listed


def test_modules_stay_short():
    known, _ = graph()
    long = {name: n for name, path in known.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def calls(name: str) -> dict[str, list[str]]:
    """Module -> the constructors or attributes of `name`'s kind it calls: e.g. Producer(...)."""
    found: dict[str, list[str]] = {}
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if called == name:
                    found.setdefault(module, []).append(called)
            elif name == "environ" and isinstance(node, ast.Attribute) and node.attr == "environ" \
                    and isinstance(node.value, ast.Name) and node.value.id == "os":
                found.setdefault(module, []).append("os.environ")
    return found


def test_kafka_clients_are_made_in_one_place():
    # kafka_properties checks the user's properties on a producer connected to nothing
    allowed = {"whystream.kafka.clients", "whystream.config.kafka_properties"}
    made = {m for kind in ("Producer", "Consumer", "AdminClient") for m in calls(kind)}
    assert made - allowed == set()


def test_the_environment_is_read_through_settings():
    # the demo hands its own environment, with the stack's settings, to the processes it starts
    allowed = {"whystream.config.settings", "whystream.jobs.demo"}
    assert set(calls("environ")) - allowed == set()


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The rules are only as good as the import reader: a lazy import inside a function and a
    relative import must both count, and a cycle through them must be found."""
    (tmp_path / "a.py").write_text("def f():\n    from pkg import b\n")
    (tmp_path / "b.py").write_text("from . import a\n")
    known = {"pkg.a": tmp_path / "a.py", "pkg.b": tmp_path / "b.py", "pkg": tmp_path / "__init__.py"}
    (tmp_path / "__init__.py").write_text("")
    edges = {name: imports(name, path, known) for name, path in known.items()}
    assert edges["pkg.a"] == {"pkg.b"} and edges["pkg.b"] == {"pkg.a"}
    assert cycles(edges) == [["pkg.a", "pkg.b"]]


if __name__ == "__main__":
    known, edges = graph()
    print(f"{len(known)} modules, {sum(map(len, edges.values()))} imports between them")
    for (a, b), n in sorted(part_edges(edges).items()):
        print(f"  {a} -> {b}: {n}")
    found = cycles(edges)
    print(f"{len(found)} cycles" + "".join(f"\n  {' <-> '.join(c)}" for c in found))
    longest = sorted(((len(p.read_text().splitlines()), n) for n, p in known.items()), reverse=True)[:5]
    print("longest modules: " + ", ".join(f"{n} {lines}" for lines, n in longest))
    sys.exit(1 if found else 0)
