"""Every reading command's output on every fixture, byte for byte as recorded in
tests/golden/outputs.json: a refactoring must leave what users see unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.golden.produce import OUTPUTS, REPO


def test_every_command_on_every_fixture_prints_what_it_printed_before():
    want = json.loads(OUTPUTS.read_text())
    env = {**os.environ, "TZ": "UTC", "COLUMNS": "100", "NO_COLOR": "1"}
    got = json.loads(subprocess.run([sys.executable, "-m", "tests.golden.produce"], cwd=REPO,
                                    env=env, capture_output=True, check=True).stdout)
    assert sorted(got) == sorted(want), "the set of fixtures or commands changed"
    changed = [k for k in want if got[k] != want[k]]
    assert not changed, (f"{len(changed)} outputs changed (diff them with "
                         f"`python -m tests.golden.produce --dump DIR`): {changed[:20]}")
