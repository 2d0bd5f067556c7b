"""Every Python example in README.md runs (and its claims hold where the test can see them)."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if README.exists() else []


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example may write files
    code = BLOCKS[index]
    if "import torch" in code:
        pytest.importorskip("torch")
    namespace = {"__name__": "__readme__"}
    exec(compile(code, f"README.md example {index}", "exec"), namespace)
    if "perplexity" in code:  # the language-model example really learns its toy corpus
        assert namespace["loss"] < 0.1
