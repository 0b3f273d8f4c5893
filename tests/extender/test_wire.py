"""The hand-written JSON of the wire module against ``json``, on random inputs."""

from __future__ import annotations

import json
import random

import pytest

from extender.test_http import FILTER_BODY, call, server  # noqa: F401 (server: a fixture)
from kubenpu.extender.server import ExtenderHTTPServer
from kubenpu.extender.wire import (
    NameCache,
    encode_filter_result,
    escape,
    printf_safe,
    printf_safe_reasons,
    split_node_names,
)

ALPHABET = 'ab-.0"\\/\n\tü€😀\x00\x7f'


def _text(rng: random.Random, longest: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, longest)))


@pytest.mark.parametrize("seed", range(40))
def test_filter_answer_is_what_json_dumps_writes(seed: int) -> None:
    rng = random.Random(seed)
    names = list(dict.fromkeys(_text(rng, 12) for _ in range(rng.randint(0, 60))))
    reasons = [_text(rng, 30) for _ in range(rng.randint(1, 4))]
    rng.shuffle(names)
    cut = sorted(rng.randint(0, len(names)) for _ in range(2))
    passed = names[: cut[0]]
    failed = {n: rng.choice(reasons) for n in names[cut[0] : cut[1]]}
    never = {n: rng.choice(reasons) for n in names[cut[1] :]}
    error = _text(rng, 10)
    # A cache that knows some names already and must not mix them up.
    escaped = NameCache(escape, limit=rng.randint(0, 30))
    escaped.many(rng.sample(names, len(names) // 2))
    body, array = encode_filter_result(passed, failed, never, error, escaped)
    old = {"NodeNames": passed, "FailedNodes": failed, "FailedAndUnresolvableNodes": never}
    old["Error"] = error  # type: ignore[assignment]
    assert json.loads(body) == old
    assert body == json.dumps(old, separators=(",", ":")).encode()
    assert json.loads(array) == passed


def test_node_names_split_off_only_at_the_top_level() -> None:
    names = ["n1", "n2"]
    body = {"Pod": {"metadata": {"name": "p"}}, "Nodes": None, "NodeNames": names}
    raw = json.dumps(body, separators=(",", ":")).encode()
    head, array = split_node_names(raw)  # type: ignore[misc]
    assert json.loads(head) == {"Pod": {"metadata": {"name": "p"}}, "Nodes": None}
    assert json.loads(array) == names
    assert split_node_names(raw + b"\n") == (head, array)
    # Not Go's compact layout, or NodeNames not last: the caller decodes the whole body.
    assert split_node_names(json.dumps(body).encode()) is None
    assert split_node_names(b'{"NodeNames":["n1"],"Pod":{}}') is None
    # A nested NodeNames last in the body splits, but its head is not a whole object.
    nested = b'{"Pod":{"metadata":{},"NodeNames":["x"]}}'
    head, _ = split_node_names(nested)  # type: ignore[misc]
    with pytest.raises(ValueError):
        json.loads(head)
    # Inside a string the key's quote is escaped, so it is not found there.
    quoted = json.dumps({"Pod": {"a": ',"NodeNames":[]}'}}, separators=(",", ":")).encode()
    assert split_node_names(quoted) is None


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
    # A known head with an array that is not names is still refused.
    bad = compact.replace(b'"NodeNames":["n1","n2","cpu"]', b'"NodeNames":["n1",2]')
    status, raw = call(server, "POST", "/filter", bad)
    assert status == 400 and b"NodeNames must be a list of strings" in raw


def test_printf_safe_leaves_no_percent_sign_and_keeps_the_map() -> None:
    reasons = {"a": "'30%' is not a quantity", "b": "fine", "c": "'30%' is not a quantity"}
    assert printf_safe_reasons(reasons) == {
        "a": "'30\uff05' is not a quantity",
        "b": "fine",
        "c": "'30\uff05' is not a quantity",
    }
    assert printf_safe("100%%") == "100\uff05\uff05"
    body, _ = encode_filter_result([], reasons, {}, "at 5%", NameCache(escape))
    assert b"%" not in body
    assert json.loads(body)["Error"] == "at 5\uff05"
