"""The privacy tools one process needs, built once from the settings.

The composition roots (the processor, the evaluator, the CLI) call
:func:`privacy_tools` at start: the key is read then, and a missing or short key for
a setting that needs one is a :class:`~schemas.errors.ConfigError` before any record
moves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from schemas.settings import Settings
from streams.privacy.chain import AuditChain
from streams.privacy.crypto import Sealer
from streams.privacy.keys import Keyring, load_keyring
from streams.privacy.pseudonym import Pseudonymiser


@dataclass(frozen=True)
class PrivacyTools:
    keyring: Keyring
    #: Pseudonymises the outputs' identifiers; None when ``privacy.pseudonymise`` is empty.
    pseudonymiser: Pseudonymiser | None
    #: Seals dead-letter payloads; None unless ``dlq.payload = "encrypted"``.
    sealer: Sealer | None
    #: The Kafka key of a redacted or encrypted dead letter; None without a key.
    key_pseudonym: Callable[[bytes], bytes] | None
    audit_chain: bool

    def chain(self, actor: str) -> AuditChain | None:
        """A fresh audit chain for ``actor`` (keyed when there is a key); None when off."""
        return AuditChain.new(actor, self.keyring.current) if self.audit_chain else None


def privacy_tools(settings: Settings) -> PrivacyTools:
    keyring = load_keyring(settings.privacy)
    sealer = None
    if settings.dlq.payload == "encrypted":
        sealer = Sealer(keyring.require('dlq.payload = "encrypted"'))
    key_pseudonym = None
    if keyring.current is not None:
        keys = Pseudonymiser.for_key(keyring.current, settings.privacy)

        def key_pseudonym(key: bytes) -> bytes:
            return keys.pseudonym(key.decode("utf-8", "replace")).encode()

    return PrivacyTools(
        keyring=keyring,
        pseudonymiser=Pseudonymiser.from_settings(settings.privacy, keyring),
        sealer=sealer,
        key_pseudonym=key_pseudonym,
        audit_chain=settings.privacy.audit_chain,
    )
