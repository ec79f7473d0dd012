"""The shape of the code (docs/ARCHITECTURE.md): no import cycle inside p2p_app (lazy imports in functions count
too), no module importing another module's private names, the core free of Gradio and click, generators free
of p2p_app."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UI_AND_CLI = {"p2p_app.ui", "p2p_app.cli"}


def modules(package: str) -> dict[str, Path]:
    base = ROOT / package
    out = {}
    for path in base.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = path
    return out


def imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, names) for every import outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            if not node.module:  # from . import x: x is a module
                out.extend((f"{target}.{n}", []) for n in names)
            else:
                out.append((target, names))
    return out


def graph() -> dict[str, set[str]]:
    mods = modules("p2p_app")
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target, _names in imports(name, path):
            while target and target not in mods:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name:
                edges[name].add(target)
    return edges


def test_no_import_cycle_in_p2p_app():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt.startswith(node + "."):  # a package importing its own submodules is not a cycle
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if not state.get(nxt):
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if not state.get(node):
            visit(node)


def test_no_module_imports_another_modules_private_names():
    for package in ("p2p_app", "generators"):
        for name, path in modules(package).items():
            for target, names in imports(name, path):
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if target.startswith(("p2p_app", "generators")) and target != name:
                    assert not private, f"{name} imports {private} from {target}"


def test_the_core_imports_neither_gradio_nor_click_and_generators_no_p2p_app():
    for name, path in modules("p2p_app").items():
        if any(name == m or name.startswith(m + ".") for m in UI_AND_CLI):
            continue
        targets = {t.split(".")[0] for t, _ in imports(name, path)}
        assert not targets & {"gradio", "click"}, f"{name} imports {targets & {'gradio', 'click'}}"
    for name, path in modules("generators").items():
        assert not any(t.startswith("p2p_app") for t, _ in imports(name, path)), name


def test_the_checker_sees_a_cycle(tmp_path, monkeypatch):
    """The cycle test can fail: a made-up edge from storage back to the service is reported."""
    real = graph()
    real["p2p_app.storage"].add("p2p_app.service")
    monkeypatch.setattr(__import__(__name__), "graph", lambda: real)
    try:
        test_no_import_cycle_in_p2p_app()
    except AssertionError as exc:
        assert "p2p_app.service" in str(exc) and "p2p_app.storage" in str(exc)
    else:
        raise AssertionError("a cycle went unnoticed")


# The layers of docs/ARCHITECTURE.md, bottom-up: a module imports only from its own layer or the ones below. A package
# name covers its submodules. A new module must be placed here (the test says so), which keeps the map in the docs true.
LAYERS: dict[str, int] = {
    # pure core
    **dict.fromkeys(
        ["p2p_app", "text", "tidy", "config", "blinding", "limits", "serving", "study", "assignment",
         "designs", "mrmc", "hrauc", "analysis", "contextual_bt", "rtools", "metrics", "metrics_run", "metrics_report",
         "export", "simulate", "simulate_disclosure", "report", "plan", "readiness"], 0),
    # storage
    **dict.fromkeys(["storage", "budget", "migrations"], 1),
    # service: the rater's surface and its parts (form checks, sessions, the image cache, catch images)
    **dict.fromkeys(["service", "forms", "sessions", "image_store", "catch_images", "model_server",
                     "model_question"], 2),
    # operations
    **dict.fromkeys(["batch", "reader", "pack", "desk"], 3),
    # front ends, then the composition root that builds them, then the CLI that starts it
    "ui": 4,
    "startup": 5,
    "cli": 6,
}


def layer(module: str) -> int:
    short = module.removeprefix("p2p_app.") if module != "p2p_app" else "p2p_app"
    while short:
        if short in LAYERS:
            return LAYERS[short]
        short = short.rsplit(".", 1)[0] if "." in short else ""
    raise AssertionError(f"{module} has no layer: place it in LAYERS (tests/test_architecture.py) and docs/ARCHITECTURE.md")


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
        for name, targets in graph().items()
        for target in targets
        if layer(target) > layer(name)
    ]
    assert not upward, "\n".join(upward)


def test_the_layer_checker_sees_an_upward_import(monkeypatch):
    real = graph()
    real["p2p_app.analysis"].add("p2p_app.service")
    monkeypatch.setattr(__import__(__name__), "graph", lambda: real)
    try:
        test_no_module_imports_from_a_layer_above_its_own()
    except AssertionError as exc:
        assert "p2p_app.analysis (layer 0) imports p2p_app.service (layer 2)" in str(exc)
    else:
        raise AssertionError("an upward import went unnoticed")
