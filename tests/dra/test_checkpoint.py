"""The checkpoint round-trips, and a torn, edited or foreign one is refused."""

from __future__ import annotations

import json

import pytest

from kubenpu.dra.checkpoint import CheckpointError, PreparedClaim, PreparedDevice, decode, encode

from .conftest import DRIVER, NODE

CLAIMS = {
    "u-1": PreparedClaim(
        "u-1", "default", "c1", (PreparedDevice(("npu",), NODE, "npu-0", ("k=u-1-npu-0",)),)
    ),
    "u-2": PreparedClaim("u-2", "team", "c2", ()),
}


def test_round_trip() -> None:
    text = encode(DRIVER, NODE, CLAIMS)
    assert decode(text, DRIVER, NODE) == CLAIMS
    assert json.loads(text)["version"] == "kubenpu.io/dra-checkpoint/v1"


def test_edited_or_torn() -> None:
    text = encode(DRIVER, NODE, CLAIMS)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        decode(text.replace("npu-0", "npu-1"), DRIVER, NODE)
    with pytest.raises(CheckpointError, match="not JSON"):
        decode(text[: len(text) // 2], DRIVER, NODE)


def test_foreign() -> None:
    text = encode(DRIVER, NODE, CLAIMS)
    with pytest.raises(CheckpointError, match="on node 'npu-node-1', this is"):
        decode(text, DRIVER, "npu-node-2")
    body = json.loads(text)
    body["version"] = "v0"
    with pytest.raises(CheckpointError, match="version 'v0'"):
        decode(json.dumps(body), DRIVER, NODE)
