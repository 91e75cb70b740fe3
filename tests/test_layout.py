"""The package's shape: imports point one way (down the layers below), and the README's architecture
listing names every module exactly once.

Imports are read from the source (every `import` statement, also those inside functions, which is where
a cycle would otherwise hide), not from sys.modules, so the test sees edges that no test happens to run.
"""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tinyvla_jax"

# Top to bottom. A module may import its own unit (its subpackage, or itself for a top-level module) and
# anything in a strictly lower layer; units of the same layer do not import each other.
LAYERS = (
    ("entry points", ("train", "evaluate", "serve", "summary", "pretrained.hf_export")),
    ("configs and CLI support", ("recipes", "presets", "cli")),
    ("runs", ("training", "evaluation")),
    ("serving a trained policy", ("serving",)),
    ("the typed run config", ("run_config",)),
    ("checkpoints, backbone import and simulator", ("checkpoints", "pretrained", "sim")),
    ("the diffusion policy", ("policy",)),
    ("model and data", ("models", "data")),
    ("diffusion", ("diffusion",)),
    ("optional dependencies, config value checks, process and machine facts",
     ("extras", "checks", "huge_pages", "roofline")),
    ("errors", ("errors",)),
)

# Upward or sideways edges allowed for now (none): the test fails when a new one appears, and also when
# a listed one is gone, so the list can only shrink.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def import_graph() -> dict[str, set[str]]:
  """module -> the package modules it imports ("tinyvla_jax." stripped; `from pkg import mod` -> pkg.mod)."""
  mods = modules()
  graph = {}
  for name, path in mods.items():
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        names = [n for n in names[:-1] if n.removeprefix("tinyvla_jax.") in mods] or names[-1:]
      else:
        continue
      for full in names:
        if full == "tinyvla_jax" or not full.startswith("tinyvla_jax."):
          continue
        target = full.removeprefix("tinyvla_jax.")
        while target not in mods and "." in target:  # `import tinyvla_jax.a.b.attr` -> tinyvla_jax.a.b
          target = target.rsplit(".", 1)[0]
        if target in mods and target != name:
          targets.add(target)
    graph[name] = targets
  return graph


def unit_of(module: str) -> tuple[int, str]:
  """(layer index, unit) of a module: the longest unit in LAYERS that is the module or a package above it."""
  best = None
  for index, (_, units) in enumerate(LAYERS):
    for unit in units:
      if (module == unit or module.startswith(unit + ".")) and (best is None or len(unit) > len(best[1])):
        best = (index, unit)
  if best is None:
    raise AssertionError(f"tinyvla_jax.{module} is in no layer: add its package to LAYERS in {__file__}")
  return best


def violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
  out = set()
  for source, targets in graph.items():
    if not source:
      continue  # the package's __init__
    source_layer, source_unit = unit_of(source)
    for target in targets:
      target_layer, target_unit = unit_of(target)
      if target_unit != source_unit and target_layer <= source_layer:
        out.add((source, target))
  return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state: dict[str, int] = {}  # 1 = on the stack, 2 = done
  stack: list[str] = []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_import_graph_has_no_cycles():
  cycle = find_cycle(import_graph())
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_point_down_the_layers():
  found = violations(import_graph())
  new = sorted(found - KNOWN_VIOLATIONS)
  assert not new, ("imports that point up or sideways (see LAYERS): "
                   + ", ".join(f"{a} -> {b} ({LAYERS[unit_of(b)[0]][0]})" for a, b in new))
  gone = sorted(KNOWN_VIOLATIONS - found)
  assert not gone, f"remove these from KNOWN_VIOLATIONS, they are fixed: {gone}"


def test_the_layer_checker_catches_what_it_should():
  graph = {"models.vla": {"data.loader", "diffusion.schedule"}, "data.loader": {"training.step"},
           "training.step": {"models.vla"}, "diffusion.schedule": {"errors"}, "errors": set()}
  assert violations(graph) == {("models.vla", "data.loader"), ("data.loader", "training.step")}
  cycle = find_cycle(graph)
  assert cycle[0] == cycle[-1] and set(cycle) == {"models.vla", "data.loader", "training.step"}
  del graph["training.step"]
  assert find_cycle(graph) is None


# Where ml_collections may be read: the entry points parse `--config`, the config layer builds ConfigDicts.
# Everything below takes the typed run config (run_config.RunConfig) and its sections.
CONFIG_DICT_LAYERS = ("entry points", "configs and CLI support")


def config_dict_users() -> dict[str, list[str]]:
  """module -> how it touches ml_collections (an import, or the name ConfigDict / config_flags)."""
  out = {}
  for name, path in modules().items():
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "ml_collections" for a in node.names):
        found.append("import ml_collections")
      elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ml_collections":
        found.append(f"from {node.module} import ...")
      elif isinstance(node, (ast.Name, ast.Attribute)) and (getattr(node, "id", None) or getattr(node, "attr", None)) \
          in ("ConfigDict", "FrozenConfigDict", "config_flags"):
        found.append("ConfigDict")
    if found:
      out[name] = sorted(set(found))
  return out


def test_no_config_dict_below_the_entry_points():
  allowed = {unit for label, units in LAYERS if label in CONFIG_DICT_LAYERS for unit in units}
  below = {m: how for m, how in config_dict_users().items()
           if unit_of(m)[1] not in allowed}
  assert not below, f"ml_collections below the entry points (take a run_config section instead): {below}"
  assert config_dict_users(), "the checker found no ml_collections use at all: it is not looking"


def readme_listing() -> list[str]:
  """Module names in the README's architecture listing: the file names at the start of each entry (the
  descriptions after them may mention other files)."""
  text = (ROOT / "README.md").read_text()
  section = text.split("\n## Architecture", 1)[1].split("\n## ", 1)[0]
  block = section.split("```", 2)[1]
  lines = block.split("\n")
  start = next(i for i, line in enumerate(lines) if line.startswith("tinyvla_jax/"))
  names, package = [], None
  for line in lines[start + 1:]:
    if line and not line.startswith(" "):
      break  # the next top-level folder (configs/, scripts/, tests/)
    head = re.match(r"^  (\w+)/\s+(.*)$", line)
    if head:
      package, rest = head.group(1), head.group(2)
    elif re.match(r"^  \w+\.py", line):
      package, rest = None, line.strip()
    else:
      rest = line.strip()
    files = re.match(r"^((?:\w+\.py\s*)+)", rest)
    for file in (files.group(1).split() if files else []):
      stem = file.removesuffix(".py")
      names.append(f"{package}.{stem}" if package else stem)
  return names


def test_readme_lists_every_module_once():
  listed = readme_listing()
  actual = sorted(m for m, path in modules().items() if path.name != "__init__.py")
  twice = sorted({m for m in listed if listed.count(m) > 1})
  missing = sorted(set(actual) - set(listed))
  stale = sorted(set(listed) - set(actual))
  assert not (twice or missing or stale), (
      f"README architecture listing vs tinyvla_jax/: missing {missing}, listed twice {twice}, "
      f"no such module {stale}")
