"""docs/api.md's complete example runs as written and its results hold together."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "docs/api.md has no python example"
    return max(blocks, key=len)


@pytest.mark.slow
def test_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_example(), str(DOC), "exec"), namespace)  # noqa: S102 - our own document
    result, audit = namespace["result"], namespace["audit"]
    assert result.run_dir == Path("runs/api-example")
    assert result.policy_verdict in ("pass", "fail", "inconclusive") and result.report is not None
    assert result.audit_verdicts["target"] in ("consistent", "violation", "inconclusive")
    # The checkpoint audit of the run's own target gives the run's own per-example metrics.
    for attack in ("loss", "zlib", "mink", "minkpp"):
        mine = audit.report["models"]["target"]["attacks"][attack]["auc"]
        theirs = result.report["models"]["target"]["attacks"][attack]["auc"]
        assert mine == pytest.approx(theirs, abs=1e-9), attack
    assert namespace["pld"].rigorous is True
    assert namespace["report"]["policy"]["verdict"] == result.policy_verdict
