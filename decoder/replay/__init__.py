"""`p11spy replay`: a recorded trace played back, to a client (script.py compiles the script the
C replay module answers from) or against another module (against.py)."""
