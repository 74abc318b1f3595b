"""The README's code is run, so it stays true."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_bring_your_own_model_example_runs(mirror):
    block = next(b for b in _python_blocks() if "class MyClassifier" in b)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # the README's own example, verbatim
    scores = namespace["evaluate"](namespace["MyClassifier"](), "sst2")
    assert set(scores) >= {"accuracy", "macro_f1"}
    assert 40 < scores["accuracy"].value < 70  # a keyword rule: well above nothing, far below a model


def test_readme_test_command_is_what_ci_runs():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    command = re.search(r"## Tests\n\n```bash\n(.*?)\n```", README, flags=re.S).group(1).strip()
    assert command in ci


@pytest.mark.parametrize("module", ["seqnlp.tasks.sentiment", "seqnlp.tasks.generation",
                                    "seqnlp.tasks.translation", "seqnlp.leaderboard", "seqnlp.export",
                                    "seqnlp.serve"])
def test_every_documented_module_has_help(module):
    assert f"python -m {module}" in README
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "usage:" in out.stdout
