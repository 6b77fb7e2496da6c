"""TLS: the self-signed certificate generated once into STATE_DIR/tls, kept
across restarts, and the one actually served by STARTTLS."""

import os
import ssl
import subprocess

from helpers import HOSTNAME, Smtp


def served_cert_der(port):
    with Smtp(port) as c:
        c.ehlo()
        c.starttls()
        der = c.sock.getpeercert(binary_form=True)
        version = c.sock.version()
        c.ehlo()
    return der, version


def pem_to_der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def test_self_signed_cert_generated_and_kept(daemons):
    d = daemons.make(name="tls", provision=False)
    cert = os.path.join(d.state_dir, "tls", "cert.pem")
    key = os.path.join(d.state_dir, "tls", "key.pem")
    assert os.path.isfile(cert) and os.path.isfile(key)
    assert os.stat(key).st_mode & 0o077 == 0, "key readable by others: %o" % os.stat(key).st_mode
    with open(cert, "rb") as f:
        first = f.read()
    der, version = served_cert_der(d.port)
    assert der == pem_to_der(cert)
    assert version in ("TLSv1.2", "TLSv1.3")
    p = subprocess.run(["openssl", "x509", "-noout", "-subject", "-ext", "subjectAltName",
                        "-in", cert], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert HOSTNAME in p.stdout, p.stdout
    d.restart()
    with open(cert, "rb") as f:
        assert f.read() == first
    assert served_cert_der(d.port)[0] == der


def test_tls_1_2_client_accepted(daemons):
    # TLS_LEVEL modern: 1.3 preferred, strong 1.2 suites still offered.
    d = daemons.make(name="tls12", provision=False)
    with Smtp(d.port) as c:
        c.ehlo()
        assert c.cmd("STARTTLS").line.startswith("220 2.0.0")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        c.sock = ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)
        assert c.sock.version() == "TLSv1.2"
        cipher = c.sock.cipher()[0]
        assert "GCM" in cipher or "CHACHA20" in cipher, cipher
        assert c.ehlo().code == 250
