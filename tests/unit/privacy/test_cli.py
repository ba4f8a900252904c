"""The privacy commands without a broker: keygen, and how dlq show renders envelopes."""

from __future__ import annotations

import stat
from pathlib import Path

from typer.testing import CliRunner

from schemas.serde import AvroSerde
from streams.cli.consume import ValueFormat
from streams.cli.main import app
from streams.cli.privacy import _envelope_format
from streams.privacy.crypto import Sealer
from streams.privacy.keys import Keyring, PrivacyKey, read_key_file


def test_keygen_writes_a_key_only_its_owner_reads(tmp_path: Path) -> None:
    out = tmp_path / "privacy.key"
    result = CliRunner().invoke(app, ["privacy", "keygen", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert len(read_key_file(out).secret) == 32
    again = CliRunner().invoke(app, ["privacy", "keygen", "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    assert (
        CliRunner().invoke(app, ["privacy", "keygen", "--out", str(out), "--force"]).exit_code == 0
    )


def test_dlq_show_opens_envelopes_and_says_why_one_does_not(
    key: PrivacyKey, old_key: PrivacyKey
) -> None:
    serde = AvroSerde("sensor_event")
    event = {"event_id": "e1", "sensor_id": "sensor-1", "event_time": 1, "features": {"a": 1.0}}
    fmt = _envelope_format(ValueFormat("avro", serde.decode), Keyring(key))
    assert fmt.decode is not None
    opened = fmt.decode(Sealer(key).seal(b"sensor-1", serde.encode(event)))
    assert opened == {"key_id": key.key_id, "original_key": "sensor-1", "payload": event}
    binary = fmt.decode(Sealer(key).seal(None, b"\xff\xfe"))
    assert binary == {
        "key_id": key.key_id, "original_key": None, "payload": "//4=", "payload_encoding": "base64"
    }  # fmt: skip
    unknown = fmt.decode(Sealer(old_key).seal(b"k", b"v"))
    assert unknown["sealed"] is True and "not among the configured keys" in unknown["error"]
    assert fmt.decode(serde.encode(event)) == event  # a raw dead letter, as consume shows it
