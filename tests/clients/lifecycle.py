"""A small client for the shim's life-cycle tests: `python lifecycle.py MODULE MODE [N]`.

Modes: `getfl` prints the return value of C_GetFunctionList; `kill N` makes N C_GetInfo calls
after C_Initialize, then kills itself with SIGKILL; `fork` initialises, forks, and has parent
and child each call C_Initialize (child only) and C_GetInfo, printing pids; `exit` returns
without C_Finalize.
"""

from __future__ import annotations

import os
import signal
import sys

import cffi

from p11spy.facts.pkcs11.cdecl import function_list_cdef

ffi = cffi.FFI()
ffi.cdef(function_list_cdef())
ffi.cdef("CK_RV C_GetFunctionList(void **);")


def main() -> int:
    lib = ffi.dlopen(sys.argv[1])
    mode = sys.argv[2]
    pp = ffi.new("void **")
    rv = lib.C_GetFunctionList(pp)
    if mode == "getfl":
        print(f"C_GetFunctionList rv={rv}", flush=True)
        return 0
    fl = ffi.cast("P11_FUNCTION_LIST_3_2 *", pp[0])
    assert fl.C_Initialize(ffi.NULL) == 0
    info = ffi.new("CK_INFO *")
    if mode == "kill":
        for _ in range(int(sys.argv[3])):
            assert fl.C_GetInfo(info) == 0
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "fork":
        pid = os.fork()
        if pid == 0:
            rv = fl.C_Initialize(ffi.NULL)
            rv2 = fl.C_GetInfo(info)
            print(f"child {os.getpid()} {rv} {rv2}", flush=True)
            os._exit(0)
        assert fl.C_GetInfo(info) == 0
        os.waitpid(pid, 0)
        print(f"parent {os.getpid()}", flush=True)
        return 0
    if mode == "exit":
        assert fl.C_GetInfo(info) == 0
        return 0
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    sys.exit(main())
