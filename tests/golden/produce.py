"""Runs every reading command on every fixture, in one process, and prints what each printed.

The golden-output test compares this against `outputs.json`, so a change that moves code
around can prove it changed no byte of what users see. Run it as
`python -m tests.golden.produce --update` after a change that is meant to alter output, and
`--dump DIR` to write each output to a file for a diff.

The command is reached through the installed `p11spy` entry point, so the test does not care
where the command line lives in the source tree.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from importlib.metadata import entry_points
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
OUTPUTS = Path(__file__).resolve().parent / "outputs.json"

# What is run on every fixture. explain takes codes, not files, so it has its own list.
PER_FILE = (
    ("decode",),
    ("decode", "--json"),
    ("decode", "--summary"),
    ("decode", "--errors"),
    ("diagnose",),
    ("diagnose", "--json"),
    ("redact",),
    ("redact", "--strict"),
    ("redact", "--check"),
)
EXPLAIN = (
    "CKR_PIN_INCORRECT", "0xa0", "160", "CKR_OK", "0x80000123", "63C2", "63 C2", "6983",
    "6A82", "9000", "6300", "-1214", "-1210", "SC_ERROR_PIN_CODE_INCORRECT", "0x80100069",
    "SCARD_E_NO_SERVICE", "0x8010002E", "CTGSK3026W", "CTGSK2137W", "AMQ9669E", "AMQ9642E",
    "gsk:408", "408", "2393", "0x5", "CKR_DEVICE_REMOVED", "7", "nonsense", "0xZZ",
)


def fixture_files() -> list[Path]:
    return sorted(p for p in FIXTURES.rglob("*")
                  if p.is_file() and p.name != "README.md" and p.suffix != ".sh")


def _main():
    (ep,) = entry_points(group="console_scripts", name="p11spy")
    return ep.load()


def run(main, argv: list[str]) -> dict:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
    out.flush()
    return {"rc": rc, "stdout": out.buffer.getvalue(), "stderr": err.getvalue().encode()}


# OpenSC debug logs of some versions carry no date: the reader takes the day from the file's
# modification time, which a fresh clone sets to now. The fixtures are read from a copy with
# this fixed time, so the outputs do not depend on when the checkout was made.
FIXED_MTIME = 1764547200  # 2025-12-01 00:00 UTC


def produce() -> dict[str, dict]:
    """Every command's exit status and output digests, keyed by the command line."""
    files = [f.relative_to(REPO) for f in fixture_files()]
    copy = Path(tempfile.mkdtemp(prefix="p11spy-golden-"))
    try:
        for f in files:
            (copy / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / f, copy / f)
            os.utime(copy / f, (FIXED_MTIME, FIXED_MTIME))
        os.chdir(copy)  # file names in the outputs are relative, as a user would type them
        return _run_all([str(f) for f in files])
    finally:
        os.chdir(REPO)
        shutil.rmtree(copy, ignore_errors=True)


def _run_all(files: list[str]) -> dict[str, dict]:
    main = _main()
    runs = [[*cmd, f] for f in files for cmd in PER_FILE]
    runs += [["explain", code] for code in EXPLAIN]
    runs.append(["explain", "--json", *EXPLAIN[:10]])
    results = {}
    for argv in runs:
        r = run(main, argv)
        results[" ".join(argv)] = r
    return results


def digests(results: dict[str, dict]) -> dict[str, dict]:
    return {k: {"rc": r["rc"], "stdout": hashlib.sha256(r["stdout"]).hexdigest(),
                "stderr": hashlib.sha256(r["stderr"]).hexdigest()}
            for k, r in results.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update", action="store_true", help=f"rewrite {OUTPUTS.name}")
    ap.add_argument("--dump", metavar="DIR", help="write every output to a file in DIR")
    args = ap.parse_args()
    results = produce()
    if args.dump:
        dest = Path(args.dump)
        dest.mkdir(parents=True, exist_ok=True)
        for key, r in results.items():
            name = key.replace("/", "_").replace(" ", "_")[:200]
            (dest / f"{name}.out").write_bytes(r["stdout"])
            (dest / f"{name}.err").write_bytes(r["stderr"] + f"\nrc={r['rc']}\n".encode())
    got = digests(results)
    if args.update:
        OUTPUTS.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        return 0
    json.dump(got, sys.stdout, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
