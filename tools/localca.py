"""A throwaway certificate authority and broker certificate for stacks on one machine (prod launcher, tests).

Production uses its own PKI; this exists so TLS is exercised end to end without one.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path


def make_ca(directory: Path, *, hostnames=("localhost",), name: str = "KeyDrop test CA") -> Path:
    """ca.crt/ca.key and server.crt/server.key (P-256) for `hostnames` and 127.0.0.1, valid 30 days."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "30", "-subj", f"/CN={name}")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={hostnames[0]}")
    san = ",".join([f"DNS:{h}" for h in hostnames] + ["IP:127.0.0.1"])
    (d / "ext.cnf").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "30", "-extfile", "ext.cnf")
    os.chmod(d / "server.key", 0o644)  # mosquitto may drop privileges
    return d
