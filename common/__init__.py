"""p11spy: a PKCS#11 traffic spy and trace decoder.

The package's parts live in folders of their own (ARCHITECTURE.md): `facts`, `spy`
(capture), `decoder`, `tui` (the viewer) and `cli` (the command line, on top). This folder is
the package root itself and holds only what every part may use: `errors`.
"""

# The one place the version is written: pyproject.toml reads it from here (dynamic), and
# `p11spy --version` prints it without importing importlib.metadata.
__version__ = "0.1.0"
