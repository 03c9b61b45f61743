"""The package's import graph, read with `ast` (nothing is imported): no cycles, and
imports inside functions only in the command layer (`cli.py`, `*/commands.py`), which
defers the heavy libraries until a command needs them, plus the few optional
dependencies below."""

from __future__ import annotations

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("invscale_jax", "seqio_tasks")

# (module, imported module) pairs that may be imported inside a function: optional
# dependencies, which may not be installed.
DEFERRED_OPTIONAL = {
    ("invscale_jax.convert.hf", "torch"): "the `hf` extra (converters only)",
    ("invscale_jax.convert.hf", "safetensors"): "the `hf` extra (converters only)",
    ("invscale_jax.convert.hf_tokenizer", "transformers"): "the `hf` extra (converters only)",
}


def _is_command_layer(module: str) -> bool:
  return module == "invscale_jax.cli" or module.endswith(".commands")


def _modules() -> dict[str, pathlib.Path]:
  found = {}
  for package in PACKAGES:
    for path in sorted((REPO / package).rglob("*.py")):
      parts = path.relative_to(REPO).with_suffix("").parts
      found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return found


def _is_type_checking(node: ast.If) -> bool:
  test = node.test
  return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
      isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module):
  """(import node, whether it sits inside a function), skipping `if TYPE_CHECKING:`."""
  def walk(node, in_function):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, ast.If) and _is_type_checking(child):
        for other in child.orelse:
          yield from walk(other, in_function)
        continue
      if isinstance(child, (ast.Import, ast.ImportFrom)):
        yield child, in_function
      yield from walk(child, in_function or isinstance(
          child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
  yield from walk(tree, False)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             modules: dict[str, pathlib.Path]) -> list[str]:
  """The modules an import statement names (`from a import b`: `a.b` if it is a module)."""
  if isinstance(node, ast.Import):
    return [alias.name for alias in node.names]
  base = node.module or ""
  if node.level:
    anchor = module.split(".")
    anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
    base = ".".join(anchor + ([base] if base else []))
  return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def import_graph():
  """Edges between the packages' modules, and the imports made inside functions."""
  modules = _modules()
  edges: dict[str, set[str]] = {m: set() for m in modules}
  deferred: list[tuple[str, str, int]] = []
  for module, path in modules.items():
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node, in_function in _imports(tree):
      for target in _targets(node, module, path.name == "__init__.py", modules):
        if in_function:
          deferred.append((module, target, node.lineno))
        while target and target not in modules:  # `import a.b.c`, `from a import name`
          target = target.rpartition(".")[0]
        edges[module].update(_with_packages(target, module, modules))
  return edges, deferred


def _with_packages(target: str, module: str, modules: dict[str, pathlib.Path]) -> set[str]:
  """`target` and the packages whose `__init__` importing it runs (all those above it but
  the importing module's own, which are already imported)."""
  parts = target.split(".")
  above = {".".join(parts[:n]) for n in range(1, len(parts))}
  own = {".".join(module.split(".")[:n]) for n in range(1, module.count(".") + 1)}
  return {m for m in above - own | {target} if m in modules and m != module}


def _a_cycle(edges: dict[str, set[str]]) -> list[str] | None:
  """One cycle of the graph (its modules, the first repeated at the end), or None."""
  state: dict[str, int] = {}  # 1: on the current path, 2: done
  path: list[str] = []

  def visit(node):
    state[node] = 1
    path.append(node)
    for nxt in sorted(edges[node]):
      if state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      if nxt not in state and (found := visit(nxt)):
        return found
    path.pop()
    state[node] = 2
    return None

  for start in sorted(edges):
    if start not in state and (found := visit(start)):
      return found
  return None


def test_no_import_cycles():
  edges, _ = import_graph()
  cycle = _a_cycle(edges)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_inside_functions_only_in_the_command_layer():
  _, deferred = import_graph()
  library = [(module, target.split(".")[0], line) for module, target, line in deferred
             if not _is_command_layer(module)]
  found = [f"{module}:{line} imports {target}" for module, target, line in library
           if (module, target) not in DEFERRED_OPTIONAL]
  assert not found, "\n".join(found)
  stale = DEFERRED_OPTIONAL.keys() - {(module, target) for module, target, _ in library}
  assert not stale, f"allowed but no longer imported inside a function: {sorted(stale)}"
