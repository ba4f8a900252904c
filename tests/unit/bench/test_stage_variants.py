"""The stage profile's variants: one per side path and stage, and picking some by name."""

from __future__ import annotations

import pytest

from schemas.errors import ConfigError
from streams.bench.common import BenchError
from streams.bench.stage_profile import check_names, pick, variants


def test_each_side_path_and_stage_has_a_variant_and_threads_only_for_a_side_process() -> None:
    names = [v.name for v in variants(["DriftPath", "ShadowScorer"], "process")]
    assert names == [
        "DriftPath off",
        "ShadowScorer off",
        "side paths off",
        "side paths on threads",
        "decode off",
        "score off",
        "encode off",
        "decode+score+encode off",
    ]
    on_threads = [v.name for v in variants(["DriftPath"], "thread")]
    assert on_threads == ["DriftPath off", *names[4:]]
    (threads,) = [v for v in variants(["DriftPath"], "process") if v.processor]
    assert threads.processor == {"side_paths": "thread"}


def test_picking_keeps_the_profiles_order_and_an_empty_pick_keeps_all() -> None:
    every = variants(["DriftPath", "ShadowScorer"], "process")
    assert pick(every, []) == every
    picked = pick(every, ["encode off", "DriftPath off"])
    assert [v.name for v in picked] == ["DriftPath off", "encode off"]


def test_an_unknown_variant_is_named_with_the_ones_there_are() -> None:
    every = variants(["DriftPath"], "thread")
    with pytest.raises(BenchError) as caught:
        pick(every, ["decode off", "decoder off"])
    message = str(caught.value)
    assert "no stage variant 'decoder off'" in message
    assert "'DriftPath off'" in message and "'decode+score+encode off'" in message


def test_a_name_no_profile_has_is_refused_before_anything_runs() -> None:
    check_names(["decode off", "side paths on threads", "DriftPath off", "StoreWriter off"])
    check_names([])
    for typo in ("decoder off", "driftpath off", "decode", "full"):
        with pytest.raises(ConfigError) as caught:
            check_names(["score off", typo])
        message = str(caught.value)
        assert message.startswith(f"--stage {typo!r}: no such variant")
        assert "'decode+score+encode off'" in message and "'<side path> off'" in message
