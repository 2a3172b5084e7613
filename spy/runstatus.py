"""What the preloaded spy tells `p11spy run`, and the true last words run makes of it.

Each process the spy is loaded into appends one-line facts, "PID KIND TEXT", to a status file
that run creates for itself (spy/preload.c, p11_status): loaded (with the program), trace (the
file it writes), skipped (a module --module did not name), shim (a p11spy shim, whose calls the
shim records), env-cleared (with the program it started so, if any), error (a complaint that
would otherwise land on the client's stderr). So run lists the traces its own processes wrote,
never a file that only matches the pattern, and says why there is none instead of guessing.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from p11spy.errors import UserError

NO_MODULE = "the command loaded no PKCS#11 module and used no reader"


class Status:
    """The facts, by kind, in the order they came. A plain class, not a dataclass: importing
    dataclasses (with inspect, ast and dis) would cost every `p11spy run` 3 to 5 ms of start."""

    def __init__(self) -> None:
        self.loaded: dict[int, str] = {}
        self.traces: list[str] = []
        self.skipped: list[str] = []
        self.env_cleared: dict[int, list[str]] = {}
        self.errors: list[tuple[int, str]] = []

    def add(self, pid: int, kind: str, text: str) -> None:
        if kind == "loaded":
            self.loaded[pid] = text
        elif kind == "env-cleared":  # with the program it started that way, if it did
            started = self.env_cleared.setdefault(pid, [])
            if text and os.path.basename(text) not in started:
                started.append(os.path.basename(text))
        elif kind == "error":
            self.errors.append((pid, text))
        elif kind in ("trace", "skipped"):
            seen = self.traces if kind == "trace" else self.skipped
            if text not in seen:
                seen.append(text)

    def program(self, pid: int) -> str:
        return f"{os.path.basename(self.loaded.get(pid, '')) or 'a program'} (pid {pid})"


class StatusFile:
    """run's own status file: 0600 in a new 0700 folder, removed with it when the run ends
    (the spy in a process that outlives the run then finds no file and stays silent)."""

    def __init__(self) -> None:
        try:
            self.folder = Path(tempfile.mkdtemp(prefix="p11spy-run-"))
        except OSError as exc:
            raise UserError(f"cannot create a folder in {tempfile.gettempdir()}: "
                            f"{exc.strerror} (set TMPDIR)") from exc
        self.path = self.folder / "status"
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))

    def read(self) -> Status:
        status = Status()
        with self.path.open("rb") as f:
            for raw in f:
                pid, _, rest = raw.decode("utf-8", "replace").rstrip("\n").partition(" ")
                kind, _, text = rest.partition(" ")
                if pid.isdigit():
                    status.add(int(pid), kind, text)
        return status

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _privilege(command: str, env: dict[str, str]) -> str | None:
    """"setuid" or "setgid" if the loader would refuse to preload anything into command."""
    path = command if "/" in command else shutil.which(command, path=env.get("PATH"))
    try:
        mode = os.stat(path).st_mode if path else 0
    except OSError:
        return None
    return "setuid" if mode & stat.S_ISUID else "setgid" if mode & stat.S_ISGID else None


def _cleared(status: Status) -> str:
    """Who started what with a cleared environment; else who cleared it (and exited)."""
    cleared = status.env_cleared
    if any(cleared.values()):  # who started what that way says more than who cleared
        cleared = {pid: started for pid, started in cleared.items() if started}
    return "; ".join(
        f"{status.program(pid)} started {', '.join(started)} with a cleared environment, so "
        "without the spy" if started else
        f"{status.program(pid)} cleared its environment, so what it started ran without the spy"
        for pid, started in cleared.items())


def last_words(status: Status, command: list[str], env: dict[str, str], child: int,
               modules: list[str] | None) -> list[str]:
    """The lines run ends with: what went wrong in the spy, then the traces or why none."""
    lines = [f"p11spy: {status.program(pid)}: {text}" for pid, text in status.errors]
    traces = [t for t in status.traces if os.path.isfile(t) and os.path.getsize(t)]
    if traces:
        return [*lines, f"p11spy: {len(traces)} trace(s): {' '.join(traces)}"]
    privilege = None if child in status.loaded else _privilege(command[0], env)
    if status.errors:
        why = "the trace file could not be opened (above)"
    elif privilege:
        why = (f"{command[0]} is {privilege}: the system preloads nothing into a setuid or "
               "setgid program (trace it with the shim instead: see `p11spy lib`)")
    elif not status.loaded:
        why = (f"the spy was not loaded into {command[0]}: the system did not preload it "
               "(a statically linked program?)")
    elif modules and status.skipped:
        why = (f"--module {':'.join(modules)} matched none of the modules loaded: "
               f"{' '.join(status.skipped)}")
    elif status.env_cleared:
        why = _cleared(status)
    else:
        why = NO_MODULE
    return [*lines, f"p11spy: no trace: {why}"]
