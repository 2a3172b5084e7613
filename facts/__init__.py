"""The facts every part reads: PKCS#11 functions, constants, attributes and structs
(`pkcs11/`), the PC/SC calls the preloaded spy records (`pcsc`), and the layout of p11spy's
trace records (`logformat`).

This part imports nothing else of the project. The shim's C is generated from it, the
decoder reads traces through it, and the viewer names what it shows with it.
"""
