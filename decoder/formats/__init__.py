"""Trace formats: one package each, holding its reader and its masker side by side.

The registry (readers, maskers, detection) is formats/registry.py; here are only the names, in
detection order, so that the command line can list them without importing a reader.
"""

NAMES = ("p11spy", "pkcs11-spy", "opensc-debug", "pcsc-spy")
