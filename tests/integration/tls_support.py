"""What the TLS and SASL tests start: a private PKI, Tansu brokers, Valkey, and stunnel.

The embedded broker (Tansu 0.6.0) cannot terminate TLS itself: its CLI puts ``--cert``
and ``--key`` in one exclusive argument group, so the two can never be given together,
and the broker only builds a TLS configuration from both. So TLS is terminated by
stunnel in front of a broker that *advertises stunnel's address*: every connection a
client opens after the bootstrap one (the metadata names the advertised address) goes
through TLS as well. Redis (Valkey) gets the same.

Certificates are made here with ``cryptography``: a CA, a server certificate naming
``localhost`` and ``127.0.0.1``, one naming another host only, a client certificate
(its key encrypted, so the key password setting is exercised), and a second CA with a
client certificate of its own, trusted by nobody.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connectors.embedded import kafka_binary, port_open, redis_binary

#: How long a server may take to listen.
START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stunnel_binary() -> str:
    """stunnel's path; the test skips, saying how to install it, when there is none."""
    path = shutil.which("stunnel4") or shutil.which("stunnel")
    if path is None:
        pytest.skip("stunnel is not installed (Debian/Ubuntu: apt-get install stunnel4)")
    return path


# -- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """File paths of the test's CA, certificates and keys (PEM)."""

    ca: Path
    server_cert: Path
    server_key: Path
    wrong_host_cert: Path
    wrong_host_key: Path
    client_cert: Path
    #: Encrypted with ``client_key_password``.
    client_key: Path
    client_key_password: str
    #: The same client key, unencrypted (for redis-py, which is given no key password).
    client_key_plain: Path
    other_ca: Path
    rogue_client_cert: Path
    rogue_client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        _builder(common_name, _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    common_name: str,
    names: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(common_name, ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, password: str | None = None) -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    path.chmod(0o600)
    return path


def make_pki(folder: Path, *, client_key_password: str) -> Pki:
    """A fresh CA and certificates in ``folder``; see the module docstring."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, other = _ca("streamscore test CA"), _ca("someone else's CA")
    local = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = _leaf(ca, "localhost", local, ExtendedKeyUsageOID.SERVER_AUTH)
    elsewhere = [x509.DNSName("elsewhere.invalid")]
    wrong_host = _leaf(ca, "elsewhere.invalid", elsewhere, ExtendedKeyUsageOID.SERVER_AUTH)
    client = _leaf(ca, "streamscore", [], ExtendedKeyUsageOID.CLIENT_AUTH)
    rogue = _leaf(other, "streamscore", [], ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(
        ca=_write_cert(folder / "ca.pem", ca[1]),
        server_cert=_write_cert(folder / "server.pem", server[1]),
        server_key=_write_key(folder / "server.key", server[0]),
        wrong_host_cert=_write_cert(folder / "wrong-host.pem", wrong_host[1]),
        wrong_host_key=_write_key(folder / "wrong-host.key", wrong_host[0]),
        client_cert=_write_cert(folder / "client.pem", client[1]),
        client_key=_write_key(folder / "client.key", client[0], client_key_password),
        client_key_password=client_key_password,
        client_key_plain=_write_key(folder / "client-plain.key", client[0]),
        other_ca=_write_cert(folder / "other-ca.pem", other[1]),
        rogue_client_cert=_write_cert(folder / "rogue-client.pem", rogue[1]),
        rogue_client_key=_write_key(folder / "rogue-client.key", rogue[0]),
    )


# -- processes ---------------------------------------------------------------------------------


class Server:
    """A child process listening on a port of 127.0.0.1, its output in a log file."""

    def __init__(self, name: str, command: list[str], port: int, log: Path) -> None:
        self.name, self.port, self.log = name, port, log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_open("127.0.0.1", port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} did not listen on {port}; {log}:\n{tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_tansu(
    folder: Path, name: str, *, advertised_port: int, authentication: bool = False
) -> Server:
    """A memory-storage Tansu on a free port that advertises ``advertised_port``."""
    port = free_port()
    command = [
        kafka_binary(), "broker",
        "--listener-url", f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url", f"tcp://127.0.0.1:{advertised_port}",
        "--storage-engine", "memory://tansu/",
    ]  # fmt: skip
    if authentication:
        command.append("--authentication")
    return Server(name, command, port, folder / f"{name}.log")


def start_valkey(folder: Path, *, password: str) -> Server:
    """A private Valkey (or redis-server) that requires ``password``."""
    port = free_port()
    data = folder / "valkey-data"
    data.mkdir(parents=True, exist_ok=True)
    command = [
        redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--daemonize", "no", "--dir", str(data),
        "--requirepass", password,
    ]  # fmt: skip
    return Server("valkey", command, port, folder / "valkey.log")


@dataclass(frozen=True)
class Tunnel:
    """One stunnel service: TLS on ``port``, plain TCP to ``target`` behind it."""

    name: str
    port: int
    target: int
    cert: Path
    key: Path
    #: Set: a client certificate signed by this CA is required (mutual TLS).
    client_ca: Path | None = None

    def config(self) -> str:
        lines = [
            f"[{self.name}]",
            f"accept = 127.0.0.1:{self.port}",
            f"connect = 127.0.0.1:{self.target}",
            f"cert = {self.cert}",
            f"key = {self.key}",
            "sslVersionMin = TLSv1.2",
        ]
        if self.client_ca is not None:
            lines += [f"CAfile = {self.client_ca}", "verifyChain = yes", "requireCert = yes"]
        return "\n".join(lines)


def start_stunnel(folder: Path, tunnels: Sequence[Tunnel]) -> Server:
    """One stunnel process serving every tunnel (returned once all of them listen)."""
    config = folder / "stunnel.conf"
    services = "\n\n".join(t.config() for t in tunnels)
    config.write_text(f"foreground = yes\npid =\ndebug = notice\n\n{services}\n")
    server = Server(
        "stunnel", [stunnel_binary(), str(config)], tunnels[0].port, folder / "stunnel.log"
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    for tunnel in tunnels[1:]:
        while not port_open("127.0.0.1", tunnel.port):
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"stunnel did not listen on {tunnel.port} ({tunnel.name})")
            time.sleep(0.05)
    return server
