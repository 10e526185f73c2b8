"""docs/walkthrough.md is executable: scripts/walkthrough.sh replays both field reports
against a fresh server with the aws CLI, psql and mysql, and fails at the first step whose
result differs from the report."""

import subprocess

from kura_harness import KURA_BIN, REPO


def test_the_walkthrough_runs_end_to_end():
    out = subprocess.run([str(REPO / "scripts" / "walkthrough.sh"), KURA_BIN], capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "walkthrough complete: both field reports reproduced" in out.stdout
