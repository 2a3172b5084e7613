"""Build scripts of the shim, outside the runtime package: C generated from the fact tables
(codegen.py) and compiled (build.py)."""
