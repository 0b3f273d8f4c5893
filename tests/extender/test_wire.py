"""The wire module's JSON against ``json``, on random inputs, and its memo of name lists."""

from __future__ import annotations

import json
import random

import pytest

from extender.test_http import FILTER_BODY, call, server  # noqa: F401 (server: a fixture)
from kubenpu.errors import WireError
from kubenpu.extender.server import ExtenderHTTPServer
from kubenpu.extender.wire import (
    NameLists,
    decode,
    encode_filter_result,
    encode_priorities,
    parse_extender_args,
    printf_safe,
    printf_safe_reasons,
    priority_heads,
)

ALPHABET = 'ab-.0"\\/\n\tü€😀\x00\x7f%'


def _text(rng: random.Random, longest: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, longest)))


@pytest.mark.parametrize("seed", range(40))
def test_answers_decode_to_what_was_encoded(seed: int) -> None:
    rng = random.Random(seed)
    names = list(dict.fromkeys(_text(rng, 12) for _ in range(rng.randint(0, 60))))
    reasons = [_text(rng, 30) for _ in range(rng.randint(1, 4))]
    rng.shuffle(names)
    cut = sorted(rng.randint(0, len(names)) for _ in range(2))
    passed = names[: cut[0]]
    failed = {n: rng.choice(reasons) for n in names[cut[0] : cut[1]]}
    never = {n: rng.choice(reasons) for n in names[cut[1] :]}
    error = _text(rng, 10)
    body = encode_filter_result(
        {
            "NodeNames": passed,
            "FailedNodes": failed,
            "FailedAndUnresolvableNodes": never,
            "Error": error,
        }
    )
    assert json.loads(body) == {
        "NodeNames": passed,
        "FailedNodes": {n: printf_safe(r) for n, r in failed.items()},
        "FailedAndUnresolvableNodes": {n: printf_safe(r) for n, r in never.items()},
        "Error": printf_safe(error),
    }
    scores = [rng.randint(0, 10) for _ in names]
    want = [{"Host": n, "Score": s} for n, s in zip(names, scores, strict=True)]
    got = encode_priorities(priority_heads(names), scores)
    assert got == json.dumps(want, separators=(",", ":")).encode()


def test_name_lists_are_found_by_equality_in_any_field_order() -> None:
    recent = NameLists(size=2)
    names = ["n1", "n2"]
    for raw in (
        b'{"Pod":{"metadata":{}},"Nodes":null,"NodeNames":["n1","n2"]}',
        b'{"NodeNames":["n1","n2"],"Pod":{"metadata":{}}}',
    ):
        _, found = parse_extender_args(decode(raw), recent)
        assert found == names
    # The second body's list is the first one's, validated then.
    assert recent.find(names) is found
    assert recent.heads(names) == priority_heads(names)
    recent.add(["a"])
    recent.add(["b"])
    assert recent.find(names) is None  # only the last two are kept
    assert recent.heads(names) == priority_heads(names)
    with pytest.raises(WireError, match="list of strings"):
        parse_extender_args(decode(b'{"Pod":{"metadata":{}},"NodeNames":["n1",2]}'), recent)


def test_recent_name_lists_answer_like_fresh_ones(server: ExtenderHTTPServer) -> None:  # noqa: F811
    compact = json.dumps(FILTER_BODY, separators=(",", ":")).encode()
    answers = [call(server, "POST", "/filter", compact) for _ in range(2)]
    assert answers[0] == answers[1]
    assert json.loads(answers[0][1])["NodeNames"] == ["n1", "n2"]
    # prioritize gets the names filter answered, as kube-scheduler sends them back.
    body = dict(FILTER_BODY, NodeNames=["n1", "n2"])
    prioritized = call(
        server, "POST", "/prioritize", json.dumps(body, separators=(",", ":")).encode()
    )
    assert prioritized == call(server, "POST", "/prioritize", json.dumps(body).encode())
    assert [h["Host"] for h in json.loads(prioritized[1])] == ["n1", "n2"]
    # A known list but for one name that is not a string is still refused.
    bad = compact.replace(b'"NodeNames":["n1","n2","cpu"]', b'"NodeNames":["n1","n2",3]')
    status, raw = call(server, "POST", "/filter", bad)
    assert status == 400 and b"NodeNames must be a list of strings" in raw


def test_printf_safe_leaves_no_percent_sign_and_keeps_the_map() -> None:
    reasons = {"a": "'30%' is not a quantity", "b": "fine", "c": "'30%' is not a quantity"}
    assert printf_safe_reasons(reasons) == {
        "a": "'30\uff05' is not a quantity",
        "b": "fine",
        "c": "'30\uff05' is not a quantity",
    }
    clean = {"a": "fine"}
    assert printf_safe_reasons(clean) is clean
    assert printf_safe("100%%") == "100\uff05\uff05"
    body = encode_filter_result(
        {"NodeNames": [], "FailedNodes": reasons, "FailedAndUnresolvableNodes": {}, "Error": "5%"}
    )
    assert b"%" not in body
    assert json.loads(body)["Error"] == "5\uff05"
