"""ModelWatcher against an in-memory model source serving real ONNX bundles.

The source keeps (model bytes, bundle metadata) per version and builds the
serving model the way a bundle folder is loaded, so a corrupt file or a bundle
that asks for a feature the stream lacks fails exactly where it would in
production. Polls are driven by hand (``poll_once``); one test runs the thread.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from models.bundle import BundleMeta
from models.serving import ServingModel
from models.train import to_onnx
from schemas.errors import InfrastructureError, SignatureMismatch
from streams.scoring.model_watcher import ROLES, ModelWatcher, Refusal, check_features
from tests.unit.scoring.conftest import CHALLENGER_FEATURES, FEATURES, bundle_meta

Bundle = tuple[bytes, BundleMeta]


class MemorySource:
    """The ModelSource Protocol in memory: which version is behind each role, and the bundles."""

    def __init__(self, bundles: dict[str, Bundle], behind: dict[str, str]) -> None:
        self.bundles = bundles
        self.behind = behind
        #: When set, ``versions`` raises it (the registry cannot be reached).
        self.down: InfrastructureError | None = None
        #: When set, the next ``load`` raises it once (a download cut short).
        self.interrupt: InfrastructureError | None = None
        self.loads: list[tuple[str, str]] = []

    def versions(self) -> dict[str, str]:
        if self.down is not None:
            raise self.down
        return dict(self.behind)

    def load(self, role: str) -> ServingModel:
        version = self.behind[role]
        self.loads.append((role, version))
        if self.interrupt is not None:
            failure, self.interrupt = self.interrupt, None
            raise failure
        onnx_bytes, meta = self.bundles[version]
        return ServingModel.build(onnx_bytes, meta)


@pytest.fixture(scope="module")
def bundles(rows: np.ndarray) -> dict[str, Bundle]:
    """v1, v2: good; v3: a corrupt model file; v4: needs "humidity"; v5: challenger order."""
    y = (rows @ np.array([1.0, -1.0, 0.5]) > 0).astype(int)
    v1 = LogisticRegression().fit(rows.astype(np.float32), y)
    v2 = LogisticRegression(C=0.1).fit(rows[:100].astype(np.float32), y[:100])
    wide = np.column_stack([rows, rows[:, 0]])
    v4 = LogisticRegression().fit(wide.astype(np.float32), y)
    reordered = rows[:, [2, 0, 1]]
    v5 = LogisticRegression().fit(reordered.astype(np.float32), y)
    classes = ["0", "1"]

    def meta(version: str, data: np.ndarray, names: list[str]) -> BundleMeta:
        return bundle_meta(data, names, name="lr", version=version, classes=classes)

    return {
        "1": (to_onnx(v1, 3), meta("1", rows, FEATURES)),
        "2": (to_onnx(v2, 3), meta("2", rows, FEATURES)),
        "3": (b"\x08\x07 not an onnx model", meta("3", rows, FEATURES)),
        "4": (to_onnx(v4, 4), meta("4", wide, [*FEATURES, "humidity"])),
        "5": (to_onnx(v5, 3), meta("5", reordered, CHALLENGER_FEATURES)),
    }


def make_watcher(
    source: MemorySource,
    *,
    roles: tuple[str, ...] = ROLES,
    poll_interval_s: float = 5.0,
    refused: set[tuple[str, str]] | None = None,
) -> ModelWatcher:
    """A watcher on a FEATURES stream that starts with the versions the source has now."""
    return ModelWatcher(
        source,
        stream_features=list(FEATURES),
        current=dict(source.behind),
        poll_interval_s=poll_interval_s,
        roles=roles,
        refused=set() if refused is None else refused,
    )


def test_a_new_version_is_loaded_once_and_handed_out_by_take(
    bundles: dict[str, Bundle], rows: np.ndarray
) -> None:
    source = MemorySource(bundles, {"champion": "1"})
    watcher = make_watcher(source)
    watcher.poll_once()
    assert source.loads == []  # nothing moved
    assert watcher.take() == ({}, [])

    source.behind["champion"] = "2"
    watcher.poll_once()
    watcher.poll_once()  # loaded, not yet taken: not loaded again
    assert source.loads == [("champion", "2")]
    ready, refusals = watcher.take()
    assert refusals == []
    assert list(ready) == ["champion"]
    model = ready["champion"]
    assert (model.name, model.version, model.feature_names) == ("lr", "2", FEATURES)
    # the v2 model, not v1: its scores are those of the v2 file
    v2 = ServingModel.build(*bundles["2"]).model.predict(rows[:20])
    assert model.model.predict(rows[:20]).score.tolist() == v2.score.tolist()
    assert watcher.current == {"champion": "2"}

    assert watcher.take() == ({}, [])  # handed out once
    watcher.poll_once()
    assert source.loads == [("champion", "2")]
    assert watcher.polls == 4


def test_both_roles_are_followed_unless_told_otherwise(bundles: dict[str, Bundle]) -> None:
    source = MemorySource(bundles, {"champion": "1", "challenger": "1"})
    champion_only = make_watcher(source, roles=("champion",))
    both = make_watcher(source)
    source.behind.update(champion="2", challenger="5")
    champion_only.poll_once()
    ready, _ = champion_only.take()
    assert {role: m.version for role, m in ready.items()} == {"champion": "2"}
    assert champion_only.current == {"champion": "2", "challenger": "1"}

    both.poll_once()
    ready, _ = both.take()
    assert {role: m.version for role, m in ready.items()} == {"champion": "2", "challenger": "5"}
    # a model may name the stream's features in its own order
    assert ready["challenger"].feature_names == CHALLENGER_FEATURES


def test_a_version_that_fails_to_load_is_refused_once_not_on_every_poll(
    bundles: dict[str, Bundle], caplog: pytest.LogCaptureFixture
) -> None:
    source = MemorySource(bundles, {"champion": "1"})
    watcher = make_watcher(source)
    source.behind["champion"] = "3"
    with caplog.at_level(logging.ERROR, logger="streams.scoring.model_watcher"):
        for _ in range(3):
            watcher.poll_once()
    assert source.loads == [("champion", "3")]
    ready, refusals = watcher.take()
    assert ready == {}
    assert len(refusals) == 1
    (refusal,) = refusals
    assert (refusal.role, refusal.version) == ("champion", "3")
    assert refusal.reason.startswith("ModelError: lr v3: onnxruntime cannot load the model")
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith("refusing champion v3: ModelError")
    assert watcher.take() == ({}, [])  # the refusal is reported once
    assert watcher.refused == {("champion", "3")}
    assert watcher.current == {"champion": "1"}  # v1 keeps serving

    source.behind["champion"] = "2"  # the next version is looked at again
    watcher.poll_once()
    ready, refusals = watcher.take()
    assert ([m.version for m in ready.values()], refusals) == (["2"], [])


def test_a_version_refused_at_start_is_not_loaded_again(bundles: dict[str, Bundle]) -> None:
    """The composition root refuses a challenger it could not load and tells the watcher."""
    source = MemorySource(bundles, {"champion": "1", "challenger": "3"})
    watcher = make_watcher(source, refused={("challenger", "3")})
    watcher.current.pop("challenger")  # it never served
    for _ in range(3):
        watcher.poll_once()
    assert source.loads == []
    assert watcher.take() == ({}, [])


def test_a_version_needing_a_feature_the_stream_lacks_is_refused(
    bundles: dict[str, Bundle],
) -> None:
    source = MemorySource(bundles, {"champion": "1", "challenger": "1"})
    watcher = make_watcher(source)
    source.behind["challenger"] = "4"
    watcher.poll_once()
    watcher.poll_once()
    assert source.loads == [("challenger", "4")]
    assert watcher.take() == (
        {},
        [
            Refusal(
                "challenger",
                "4",
                "SignatureMismatch: lr v4 needs features the stream does not carry: ['humidity']",
            )
        ],
    )
    assert watcher.current == {"champion": "1", "challenger": "1"}


def test_the_source_being_down_keeps_the_current_models(
    bundles: dict[str, Bundle], caplog: pytest.LogCaptureFixture
) -> None:
    source = MemorySource(bundles, {"champion": "1"})
    watcher = make_watcher(source)
    source.behind["champion"] = "2"
    source.down = InfrastructureError("MLflow at http://127.0.0.1:5000 did not answer")
    with caplog.at_level(logging.WARNING, logger="streams.scoring.model_watcher"):
        for _ in range(3):
            watcher.poll_once()
    assert watcher.source_up is False
    assert (watcher.polls, source.loads) == (3, [])
    assert watcher.take() == ({}, [])
    assert watcher.current == {"champion": "1"}
    # said once when it went down, not on every poll
    assert [r.getMessage() for r in caplog.records] == [
        "model source unreachable, keeping current models: "
        "MLflow at http://127.0.0.1:5000 did not answer"
    ]

    source.down = None
    watcher.poll_once()
    assert watcher.source_up is True
    ready, _ = watcher.take()
    assert [m.version for m in ready.values()] == ["2"]


def test_a_load_cut_short_is_retried_not_refused(bundles: dict[str, Bundle]) -> None:
    source = MemorySource(bundles, {"champion": "1"})
    watcher = make_watcher(source)
    source.behind["champion"] = "2"
    source.interrupt = InfrastructureError("download of v2 interrupted")
    watcher.poll_once()
    assert watcher.take() == ({}, [])
    watcher.poll_once()
    assert source.loads == [("champion", "2"), ("champion", "2")]
    ready, refusals = watcher.take()
    assert ([m.version for m in ready.values()], refusals) == (["2"], [])


def test_the_thread_polls_until_stopped(bundles: dict[str, Bundle]) -> None:
    source = MemorySource(bundles, {"champion": "1"})
    watcher = make_watcher(source, poll_interval_s=0.01)
    source.behind["champion"] = "2"
    watcher.start()
    deadline = time.monotonic() + 10
    ready: dict[str, ServingModel] = {}
    while not ready and time.monotonic() < deadline:
        ready, _ = watcher.take()
        time.sleep(0.01)
    watcher.stop()
    assert [m.version for m in ready.values()] == ["2"]
    polls = watcher.polls
    assert polls >= 1
    time.sleep(0.05)
    assert watcher.polls == polls  # stopped: no more polls
    assert source.loads == [("champion", "2")]


def test_check_features(bundles: dict[str, Bundle]) -> None:
    challenger = ServingModel.build(*bundles["5"])
    check_features(challenger, FEATURES)  # the same features in another order
    check_features(challenger, [*FEATURES, "humidity"])  # the stream may carry more
    with pytest.raises(
        SignatureMismatch,
        match=r"^lr v5 needs features the stream does not carry: \['rpm'\]$",
    ):
        check_features(challenger, ["temp", "pressure"])
