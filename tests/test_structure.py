"""The house keeps its shape: imports run downhill (no cycle, no forbidden edge, function-level
imports included), no function is longer than 80 lines, and matplotlib is imported by plots.py
alone. All read the sources with ast; nothing is imported or run."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p.stem for p in ROOT.glob("*.py"))

# which project files each file may import; the leaf `plumbing` imports none
ALLOWED = {
    "plumbing": set(),
    "attention": {"plumbing"},
    "plots": {"plumbing"},
    "schedules": {"plots", "plumbing"},  # plots only in main(), to draw every schedule
    "model": {"attention", "plumbing"},
    "gpt2": {"model", "plumbing"},  # GPT-2's weights into the model
    "data": {"plumbing"},
    "tasks": {"data", "plumbing"},
    "seekr": {"attention", "model", "tasks", "plumbing"},
    "compare": {"attention", "model", "schedules", "plots", "plumbing"},
    "eval": {"attention", "model", "gpt2", "data", "compare", "plots", "plumbing"},
    "continual": {"seekr", "model", "data", "tasks", "eval", "gpt2", "plots", "plumbing"},
    "train": {"continual", "model", "gpt2", "data", "schedules", "plots", "plumbing"},
    "bench": {"check", "train", "model", "data", "attention", "plumbing"},  # check: its mode
    "check": {"model", "data", "attention", "plumbing"},  # runs bench and train as subprocesses
}
LONGEST = 80


def project_imports(path):
    """{imported project module: [line numbers]} of every import statement in the file, at any
    depth."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split(".")[0]]
        for name in names:
            if name in MODULES:
                found.setdefault(name, []).append(node.lineno)
    return found


def graph():
    return {m: project_imports(ROOT / f"{m}.py") for m in MODULES}


def test_every_top_level_file_has_a_place_in_the_graph():
    assert set(MODULES) == set(ALLOWED), (
        "a new top-level file needs its row in ALLOWED (and in README's layout)"
    )


def test_imports_follow_the_allowed_directions():
    wrong = [
        f"{m}.py:{lines[0]} imports {dep}"
        for m, deps in graph().items()
        for dep, lines in deps.items()
        if dep not in ALLOWED[m]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    edges = {m: set(deps) for m, deps in graph().items()}

    def cycle_from(start, node, path):
        for nxt in sorted(edges[node]):
            if nxt == start:
                return path + [nxt]
            if nxt not in path:
                found = cycle_from(start, nxt, path + [nxt])
                if found:
                    return found
        return None

    for m in MODULES:
        loop = cycle_from(m, m, [m])
        assert loop is None, " -> ".join(loop)


def test_the_import_graph_is_the_documented_one():
    """The graph as it stands, spelled out, so a new edge is a visible decision (README's layout
    table)."""
    edges = {m: sorted(deps) for m, deps in graph().items()}
    assert edges == {
        "attention": [],
        "bench": ["attention", "check", "data", "model", "plumbing", "train"],
        "check": ["attention", "model"],
        "compare": ["attention", "model", "plots", "plumbing", "schedules"],
        "continual": ["data", "eval", "gpt2", "model", "plots", "plumbing", "seekr", "tasks"],
        "data": ["plumbing"],
        "eval": ["attention", "compare", "data", "gpt2", "model", "plots", "plumbing"],
        "gpt2": ["model", "plumbing"],
        "model": ["attention", "plumbing"],
        "plots": ["plumbing"],
        "plumbing": [],
        "schedules": ["plots", "plumbing"],
        "seekr": ["attention", "plumbing", "tasks"],
        "tasks": ["plumbing"],
        "train": ["continual", "data", "gpt2", "model", "plots", "plumbing", "schedules"],
    }


def test_the_detector_sees_function_level_imports(tmp_path):
    (tmp_path / "x.py").write_text("def f():\n    import seekr\n    from train import main\n")
    assert project_imports(tmp_path / "x.py") == {"seekr": [2], "train": [3]}


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in sorted(ROOT.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > LONGEST:
                    long.append(f"{path.name}:{node.lineno} {node.name} is {n} lines")
    assert not long, "\n".join(long)


def test_only_plots_imports_matplotlib():
    found = []
    for path in sorted(ROOT.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "matplotlib" for n in names) and path.name != "plots.py":
                found.append(f"{path.name}:{node.lineno}")
    assert not found, found
