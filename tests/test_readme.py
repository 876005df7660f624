"""The README's notebook example runs and gives the advertised numbers."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_notebook_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README lost its notebook example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - our own README
    # The example simulates a science image at a sky level of 1000.
    assert namespace["scale"] == pytest.approx(1000.0, rel=2e-3)
    assert len(namespace["bgList"]) == 1
    assert (tmp_path / "sky_frame.png").stat().st_size > 0
