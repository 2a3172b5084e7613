"""What a command loads before it starts its work (issue 12: `p11spy --version` and `p11spy run`
start in tens of milliseconds). Not a timing: the timings are in `make bench`. This checks the
cause, so that a module-level import of the decoder in a command module fails here, whatever
the machine's speed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Run a command in a fresh interpreter, then list the modules it had loaded.
PROBE = """
import json, sys
from p11spy.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stdout.flush()
sys.__stderr__.write(json.dumps(sorted(sys.modules)) + "\\n")
"""

# Heavy for a start: the readers and their tables, the viewer, the build, parsing libraries.
# dataclasses brings inspect, ast and dis (3 to 5 ms).
HEAVY = ("p11spy.decoder.", "p11spy.tui", "p11spy.facts", "textual", "rich", "construct",
         "cffi", "importlib.metadata", "shim_build", "dataclasses", "orjson")
LIGHT_DECODER = {"p11spy.decoder.formats"}  # the format names the parser offers as choices


def loaded(*argv: str) -> list[str]:
    res = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                         timeout=60)
    return json.loads(res.stderr.strip().splitlines()[-1])


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.startswith(HEAVY) and m not in LIGHT_DECODER]


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["run", "--", "true"],
                                  ["lib"], ["decode", "--help"], ["redact", "--help"],
                                  ["show", "--help"], ["bundle", "--help"]])
def test_start_loads_nothing_heavy(argv: list[str]) -> None:
    assert heavy(loaded(*argv)) == []


def test_the_probe_sees_heavy_imports(tmp_path) -> None:
    """The check above can fail: a command that decodes does load the decoder."""
    trace = tmp_path / "t.log"
    trace.write_text("0: C_Initialize\n")
    assert "p11spy.decoder.formats.registry" in loaded("decode", str(trace))


def test_diagnose_help_names_every_rule() -> None:
    """The rule list of `p11spy diagnose --help` is read from the rule table when asked for."""
    from p11spy.decoder.diagnose import RULES

    res = subprocess.run([sys.executable, "-m", "p11spy.cli.main", "diagnose", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    listed = " ".join(res.stdout.split("rules:")[1].split()).replace("- ", "-")
    assert [n.strip() for n in listed.split(",")] == sorted(RULES)
