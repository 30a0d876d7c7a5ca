"""Test PKI with openssl: CAs and broker certificates (EC P-256 or RSA-2048), good ones and the impostors a lock
must refuse (self-signed, another CA, a wrong name, expired)."""
from __future__ import annotations

import subprocess
from pathlib import Path

_KEYS = {"ec": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"], "rsa": ["-newkey", "rsa:2048"]}


def _ssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str, kind: str = "ec") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    _ssl(d, "req", "-x509", *_KEYS[kind], "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "30",
         "-subj", f"/CN={name}")
    return d


def issue(ca: Path, out: Path, name: str = "localhost", kind: str = "ec", expired: bool = False) -> Path:
    """out/server.crt + out/server.key for `name`, signed by the CA in `ca` (expired: valid only in 2020)."""
    out.mkdir(parents=True, exist_ok=True)
    _ssl(out, "req", *_KEYS[kind], "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={name}")
    (out / "ext.cnf").write_text(f"subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n")
    if not expired:
        _ssl(out, "x509", "-req", "-in", "server.csr", "-CA", str(ca / "ca.crt"), "-CAkey", str(ca / "ca.key"),
             "-CAcreateserial", "-out", "server.crt", "-days", "30", "-extfile", "ext.cnf")
    else:  # `openssl x509` cannot backdate; `openssl ca` can
        db = out / "db"
        db.mkdir(exist_ok=True)
        (db / "index.txt").write_text("")
        (db / "serial").write_text("01\n")
        (out / "ca.cnf").write_text(
            "[ca]\ndefault_ca=d\n[d]\ndatabase=db/index.txt\nserial=db/serial\nnew_certs_dir=db\n"
            "default_md=sha256\npolicy=p\nunique_subject=no\n[p]\ncommonName=supplied\n"
            f"[ext]\nsubjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n")
        _ssl(out, "ca", "-batch", "-config", "ca.cnf", "-cert", str(ca / "ca.crt"), "-keyfile", str(ca / "ca.key"),
             "-in", "server.csr", "-out", "server.crt", "-startdate", "20200101000000Z",
             "-enddate", "20200201000000Z", "-extensions", "ext", "-notext")
    return out


def self_signed(out: Path, name: str = "localhost") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ext.cnf").write_text(f"subjectAltName=DNS:{name}\n")
    _ssl(out, "req", "-x509", *_KEYS["ec"], "-nodes", "-keyout", "server.key", "-out", "server.crt", "-days", "30",
         "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}")
    return out
