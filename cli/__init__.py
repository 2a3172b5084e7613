"""The command line: main.py builds the parser over one module per command."""
