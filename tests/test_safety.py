"""Nothing in the package may execute code from a file: no pickle, no unsafe torch.load, no eval/exec."""

import ast
from pathlib import Path

import seqnlp

PACKAGE = Path(seqnlp.__file__).parent
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib"}


def scan(source: str, name: str = "<src>") -> list[str]:
    """Every unsafe import or call in `source`."""
    problems = []
    tree = ast.parse(source, filename=name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            problems += [f"{name}: import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            problems.append(f"{name}: from {node.module} import")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                problems.append(f"{name}:{node.lineno}: {func.id}()")
            elif isinstance(func, ast.Attribute) and func.attr == "load" and isinstance(func.value, ast.Name) \
                    and func.value.id == "torch":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                if not safe:
                    problems.append(f"{name}:{node.lineno}: torch.load without weights_only=True")
    return problems


def test_package_never_unpickles_or_evaluates():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 8
    problems = [p for path in files for p in scan(path.read_text(), path.name)]
    assert problems == []


def test_scanner_catches_what_it_looks_for():
    bad = ("import pickle\nfrom joblib import load\nimport torch\nx = torch.load('m.pt')\n"
           "y = torch.load('m.pt', weights_only=True)\neval('1')\nexec('x=1')\n")
    assert scan(bad) == ["<src>: import pickle", "<src>: from joblib import", "<src>:4: torch.load without weights_only=True",
                         "<src>:6: eval()", "<src>:7: exec()"]
