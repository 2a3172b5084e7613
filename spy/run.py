"""`p11spy run`: a client run with the spy preloaded, and a report of the traces it left."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from p11spy.errors import UserError
from p11spy.spy.shims import PRELOAD

from .runstatus import Status, StatusFile, last_words


def _default_folder() -> Path:
    """A new private folder for this run's traces (removed again if it stays empty)."""
    top = Path(f"/tmp/p11spy-{os.getuid()}")
    try:
        top.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {top}: {exc.strerror}; give -o OUTPUT") from exc
    if top.is_symlink() or top.stat().st_uid != os.getuid():
        raise UserError(f"{top} is not a folder of ours; give -o OUTPUT")
    run = top / time.strftime("run-%Y%m%d-%H%M%S")
    n = 0
    while True:
        candidate = run.with_name(f"{run.name}-{n}") if n else run
        try:
            candidate.mkdir(mode=0o700)
            return candidate
        except FileExistsError:
            n += 1


def _check_output(pattern: str) -> None:
    """Say now, not after the client ran, that the traces have nowhere to go."""
    folder = os.path.dirname(pattern) or "."
    if "%" in folder:
        return  # expanded per process; the spy says so if it cannot open the file
    if not os.path.isdir(folder):
        raise UserError(f"-o {pattern}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"-o {pattern}: folder {folder} is not writable")


def run_traced(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UserError("no command given: p11spy run [-o OUTPUT] [--module PATH] -- COMMAND...")
    if not PRELOAD.is_file():
        raise UserError(f"the spy is not built ({PRELOAD} is missing): run `make setup`")
    if args.show and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError("--show needs a terminal (without it, the traces are listed at the end)")
    if args.show and args.output and "%" in args.output.replace("%%", ""):
        raise UserError(f"--show follows one file: give -o a plain file name, not the "
                        f"pattern {args.output} (every process appends to it)")
    if args.output:
        _check_output(args.output)
    folder = None if args.output else _default_folder()
    output = args.output or str(folder / ("trace.p11" if args.show else "%n-%p.p11"))
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(filter(None, [str(PRELOAD), env.get("LD_PRELOAD", "")]))
    env["P11SPY_OUTPUT"] = output
    if args.module:
        env["P11SPY_WRAP"] = ":".join(args.module)
    else:
        env.pop("P11SPY_WRAP", None)
    if args.log_secrets:
        env["P11SPY_LOG_SECRETS"] = "1"
    status_file = StatusFile()
    env["P11SPY_RUN_STATUS"] = str(status_file.path)
    try:
        child, status = (_run_shown(command, env, output) if args.show
                         else _run_child(command, env))
        facts = status_file.read()
        words = last_words(facts, command, env, child, args.module)
    finally:
        status_file.remove()
        if folder is not None:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: the client left no trace
    if status < 0:
        name = signal.Signals(-status).name
        if -status not in (signal.SIGINT, signal.SIGPIPE):  # as a shell: those go unsaid
            words.insert(0, f"p11spy run: client killed by {name}{_inside(facts, child)}")
    print("\n".join(words), file=sys.stderr)
    return 128 - status if status < 0 else status


def _inside(facts: Status, child: int) -> str:
    """' inside C_Sign (thread 1234)': the calls the client died in, from its traces."""
    from p11spy.spy.inside import calls_inside  # only after a death

    found = calls_inside(facts.traces, child)
    return " inside " + ", ".join(f"{fn} (thread {tid})" for fn, tid in found) if found else ""


# How a shell reports a command it could not start: 127 not found, 126 found but not runnable.
_NOT_FOUND = (errno.ENOENT, errno.ENOTDIR)


def _start(command: list[str], env: dict[str, str], **popen: object) -> subprocess.Popen:
    try:
        return subprocess.Popen(command, env=env, **popen)  # type: ignore[call-overload]
    except OSError as exc:
        raise UserError(f"cannot run {command[0]}: {exc.strerror}",
                        status=127 if exc.errno in _NOT_FOUND else 126) from exc


_FORWARD = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_SI_KERNEL = 0x80  # si_code of a signal the terminal sent (to the client as well)


def _run_child(command: list[str], env: dict[str, str]) -> tuple[int, int]:
    """The client's pid and wait status. SIGTERM, SIGINT and SIGHUP sent to run (kill) are
    passed on to the client; the ones the terminal sends (Ctrl-C, hang-up) reach the client
    by themselves, since it is in run's process group, and are not sent twice."""
    waited = {*_FORWARD, signal.SIGCHLD}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        child = _start(command, env,
                       preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, old))
        while child.poll() is None:
            info = signal.sigtimedwait(waited, 1.0)
            if info and info.si_signo != signal.SIGCHLD and info.si_code != _SI_KERNEL:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, info.si_signo)
        return child.pid, child.returncode
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _run_shown(command: list[str], env: dict[str, str], trace: str) -> tuple[int, int]:
    """The client in the background, the viewer following its trace in the foreground.

    The client gets no terminal: its input is /dev/null and its output is kept and printed
    when the viewer closes, so neither garbles the other's screen. It runs in a session of its
    own, so a Ctrl-C meant for the viewer does not reach it; SIGTERM and SIGHUP sent to run
    are passed on to it.
    """
    fd = os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    os.close(fd)  # the viewer follows it from the start; the spy appends to it
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            child = _start(command, env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                           start_new_session=True)
            for sig in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, lambda n, _f: child.send_signal(n))  # not once reaped
            viewer = [str(Path(sys.executable).parent / "p11spy"), "show", "--follow",
                      "--format", "p11spy", trace]
            try:
                subprocess.run(viewer)
                if child.poll() is None:
                    print(f"p11spy: waiting for {command[0]} (pid {child.pid}) to finish; "
                          "Ctrl-C stops it", file=sys.stderr, flush=True)
                status = child.wait()
            except KeyboardInterrupt:
                child.terminate()
                status = child.wait()
            for kept, stream in ((out, sys.stdout), (err, sys.stderr)):
                kept.seek(0)
                stream.flush()
                shutil.copyfileobj(kept, stream.buffer)
                stream.flush()
    finally:
        with contextlib.suppress(OSError):
            if not os.path.getsize(trace):
                os.unlink(trace)  # nothing was traced: no empty file left behind
    return child.pid, status
