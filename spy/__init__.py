"""p11spy: the capture side (shim module) and the PKCS#11 facts it is generated from."""
