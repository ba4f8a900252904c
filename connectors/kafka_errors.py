"""Why a Kafka client could not connect, said in one line a person can act on.

A refused TLS handshake or SASL exchange does not fail a request: librdkafka retries
until the request times out, and tells the cause only to the client's error callback,
in its own words::

    ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::
    certificate verify failed: broker certificate could not be verified, verify that
    ssl.ca.location is correctly configured or root CA certificates are installed
    (install ca-certificates package) (after 5ms in state SSL_HANDSHAKE)

:class:`ConnectionErrors` is that callback; :func:`describe_refusal` turns what it kept
into the cause and the setting to look at. librdkafka words a certificate from an
unknown CA and one that names another host alike, so a failed verification is tried
once more with Python's ``ssl`` module, which tells the two apart. No message here
carries a secret: librdkafka's never do, and the settings are named, not shown.
"""

from __future__ import annotations

import os
import re
import socket
import ssl

from confluent_kafka import KafkaError

from schemas.settings import KafkaSettings

__all__ = ["ConnectionErrors", "describe_refusal", "tls_verify_failure"]

#: Error codes that name a cause (a later, vaguer transport error does not replace them).
_TELLING = frozenset({KafkaError._SSL, KafkaError._AUTHENTICATION})
#: ``ssl://host:port/bootstrap: `` before librdkafka's text, ``(after 5ms in state X)`` after.
_BROKER_PREFIX = re.compile(r"^\S+://\S+?/\S+?: ")
_STATE_SUFFIX = re.compile(r"\s*\(after \d+ms in state \w+\)$")
_OPENSSL_CODE = re.compile(r"error:[0-9A-Fa-f]+:[^:]*::")

_TLS_SETTINGS = (
    "kafka.ssl_ca_location (STREAMSCORE_KAFKA__SSL_CA_LOCATION) must name the CA that "
    "signed the broker's certificate, and that certificate must name the host in "
    "kafka.bootstrap_servers"
)
_CLIENT_CERT_SETTINGS = "kafka.ssl_certificate_location and kafka.ssl_key_location"
_SASL_SETTINGS = "kafka.sasl_mechanism, kafka.sasl_username and kafka.sasl_password"


class ConnectionErrors:
    """A client's ``error_cb``: keeps the error that best says why connecting fails.

    An object of its own (not a method of the client's wrapper) so the librdkafka
    handle does not reference the wrapper that owns it.
    """

    def __init__(self) -> None:
        self.last: KafkaError | None = None

    def __call__(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            return  # a consequence, never the cause
        if self.last is not None and self.last.code() in _TELLING and err.code() not in _TELLING:
            return
        self.last = err


def _plain(text: str) -> str:
    """librdkafka's text without the broker prefix, the state suffix and OpenSSL codes.

    >>> _plain("ssl://h:1/bootstrap: SSL handshake failed: error:0A000086:SSL routines::"
    ...        "certificate verify failed (after 5ms in state SSL_HANDSHAKE)")
    'SSL handshake failed: certificate verify failed'
    """
    return _OPENSSL_CODE.sub("", _STATE_SUFFIX.sub("", _BROKER_PREFIX.sub("", text.strip())))


def describe_refusal(err: KafkaError | None, kafka: KafkaSettings) -> str | None:
    """The cause of a TLS or SASL refusal and what to set, or None for any other error."""
    if err is None:
        return None
    text = _plain(err.str())
    if err.code() == KafkaError._AUTHENTICATION or "SASL" in text:
        return f"SASL authentication failed ({text}); check {_SASL_SETTINGS}"
    if "alert certificate required" in text and not kafka.ssl_certificate_location:
        return (
            "the broker requires a client certificate (mutual TLS) and none is configured; "
            f"set {_CLIENT_CERT_SETTINGS}"
        )
    if "alert certificate required" in text:  # OpenSSL sends none the broker's CAs did not sign
        return (
            "the broker requires a client certificate (mutual TLS) signed by a CA it trusts, "
            "and kafka.ssl_certificate_location holds none it accepts"
        )
    alert = re.search(r"alert ([\w ]*certificate[\w ]*|unknown ca)", text)
    if alert:
        return (
            f"the broker refused the client certificate ({alert.group(1).strip()}); "
            f"{_CLIENT_CERT_SETTINGS} must name a client certificate signed by a CA the "
            "broker trusts"
        )
    if "certificate verify failed" in text:
        return _unverified(tls_verify_failure(kafka), kafka)
    if err.code() == KafkaError._SSL:
        return f"TLS handshake failed ({text}); {_TLS_SETTINGS}"
    return None


def _unverified(reason: str | None, kafka: KafkaSettings) -> str:
    """The broker's certificate did not verify: another host's, or another CA's."""
    if reason and "mismatch" in reason:
        host = kafka.bootstrap_servers.split(",")[0].strip().rpartition(":")[0]
        return (
            f"the broker's TLS certificate does not name {host} (OpenSSL: {reason}); connect by "
            "a name the certificate holds (kafka.bootstrap_servers) or reissue it with this one"
        )
    if reason and ("issuer" in reason or "self-signed" in reason or "self signed" in reason):
        return (
            f"the broker's TLS certificate is signed by a CA that kafka.ssl_ca_location does "
            f"not hold (OpenSSL: {reason}); set kafka.ssl_ca_location "
            "(STREAMSCORE_KAFKA__SSL_CA_LOCATION) to the CA file that signed it"
        )
    reason = reason or "certificate verify failed"
    return f"the broker's TLS certificate did not verify ({reason}); {_TLS_SETTINGS}"


def tls_verify_failure(kafka: KafkaSettings, timeout: float = 3.0) -> str | None:
    """OpenSSL's reason for refusing the first broker's certificate, as the client would
    verify it (same CA, same host check); None when it verifies or cannot be reached."""
    address = kafka.bootstrap_servers.split(",")[0].strip()
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    ca = kafka.ssl_ca_location
    context = ssl.create_default_context(
        cafile=ca if ca and os.path.isfile(ca) else None,
        capath=ca if ca and os.path.isdir(ca) else None,
    )
    algorithm = kafka.client_config.get("ssl.endpoint.identification.algorithm", "https")
    if algorithm.lower() == "none":
        context.check_hostname = False
    try:
        with (
            socket.create_connection((host, int(port)), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return None
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message).rstrip(".")
    except (OSError, ValueError):  # ssl.SSLError is an OSError: not a verification answer
        return None
