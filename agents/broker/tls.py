"""TLS for the local broker: a throwaway certificate authority and a broker certificate for the
loopback address, made with Debian's ``openssl``, kept in one folder and reused across starts.

Files (``make_tls(folder)``):

* ``ca.pem``: the CA's certificate, what clients trust (``ssl.ca.location``);
* ``ca.key``: the CA's private key (readable by its owner only), used to sign the broker's;
* ``broker.p12``: the broker's key and certificate chain in a PKCS#12 keystore, encrypted with
  a random password kept in ``broker.pass`` (owner only); the broker certificate names
  ``127.0.0.1`` and ``localhost``, so clients verify the host as well.

Passwords reach ``openssl`` through its environment, never its command line.

>>> tls = BrokerTls(Path("/tmp/t"), "pw")
>>> tls
BrokerTls(folder=PosixPath('/tmp/t'))
>>> tls.ca_cert.name, tls.client_config()["ssl.ca.location"]
('ca.pem', '/tmp/t/ca.pem')
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from model_canary.streams.errors import BrokerError

__all__ = ["BrokerTls", "make_tls"]

DAYS = 825
HOSTS = ("IP:127.0.0.1", "DNS:localhost")
_PASS_ENV = "CANARY_TLS_PASSWORD"


@dataclass(frozen=True, slots=True, repr=False)
class BrokerTls:
    """The TLS files of a local broker (see the module docs); the password never shows."""

    folder: Path
    keystore_password: str

    def __repr__(self) -> str:
        return f"BrokerTls(folder={self.folder!r})"

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.folder / "broker.p12"

    def client_config(self) -> dict[str, str]:
        """The librdkafka settings that trust this broker."""
        return {"ssl.ca.location": str(self.ca_cert)}

    def server_properties(self) -> dict[str, str]:
        """The ``ssl.*`` entries of ``server.properties`` (listener-wide)."""
        return {
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": self.keystore_password,
            "ssl.key.password": self.keystore_password,
            # The broker reaches itself over TLS (inter-broker traffic) and trusts the same CA.
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_cert),
        }


def make_tls(folder: Path) -> BrokerTls:
    """The TLS files in ``folder``, made on first use (see the module docs)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    password_file = folder / "broker.pass"
    done = folder / "broker.p12"
    if done.exists() and password_file.exists():
        return BrokerTls(folder, password_file.read_text().strip())
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BrokerError(
            "openssl is needed to make the local broker's TLS certificates "
            "(apt-get install openssl; scripts/setup installs it)"
        )
    password = secrets.token_hex(16)
    env = {**os.environ, _PASS_ENV: password}
    ext = folder / "broker.ext"
    ext.write_text(
        f"subjectAltName={','.join(HOSTS)}\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    steps = [
        [openssl, "req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem",
         "-days", str(DAYS * 2), "-subj", "/CN=model-canary local CA"],
        [openssl, "req", *curve, "-keyout", "broker.key", "-out", "broker.csr",
         "-subj", "/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "broker.crt", "-days", str(DAYS), "-extfile", ext.name],
        [openssl, "pkcs12", "-export", "-in", "broker.crt", "-inkey", "broker.key",
         "-certfile", "ca.pem", "-name", "broker", "-out", "broker.p12.tmp",
         "-passout", f"env:{_PASS_ENV}"],
    ]  # fmt: skip
    old_umask = os.umask(0o077)  # every key and password file: owner only
    try:
        for cmd in steps:
            proc = subprocess.run(
                cmd, cwd=folder, env=env, capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                raise BrokerError(f"openssl {cmd[1]} failed: {proc.stderr.strip()[-500:]}")
        password_file.write_text(password + "\n")
    finally:
        os.umask(old_umask)
    # The broker's unencrypted key is in the keystore now; the CA key stays to sign again.
    (folder / "broker.key").unlink()
    (folder / "broker.csr").unlink()
    (folder / "broker.p12.tmp").rename(done)
    return BrokerTls(folder, password)
