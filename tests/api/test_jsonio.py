"""api/jsonio: orjson and the standard-library fallback refuse the same documents.

Every case runs on both backends (the fallback is what a platform without orjson's
wheel runs); where they differ, the difference is the one the module documents and
the API's answer is the same (a 400 naming the field).
"""

from __future__ import annotations

from typing import Any

import pytest
from exchange_node.api import jsonio

orjson = pytest.importorskip("orjson", reason="orjson is a dependency; install the project")


@pytest.fixture(params=["orjson", "stdlib"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "stdlib":
        monkeypatch.setattr(jsonio, "_orjson", None)
    else:
        monkeypatch.setattr(jsonio, "_orjson", orjson)
    return str(request.param)


REFUSED = [
    b"NaN",
    b'{"price": NaN}',
    b"[Infinity]",
    b"-Infinity",
    b"1e400",  # a finite literal that parses to infinity
    b"-1e400",
    b'{"a": 1} {"b": 2}',  # two documents
    b'{"a": 1}x',
    b"",
    b"   ",
    b'"\xff"',  # not UTF-8
    b"{'a': 1}",
    b'{"a": 1,}',
    b"[" * 5_000 + b"]" * 5_000,  # deeper than either parser goes
]


@pytest.mark.parametrize("doc", REFUSED, ids=lambda d: repr(d[:20]))
def test_both_backends_refuse_the_same_documents(backend: str, doc: bytes) -> None:
    with pytest.raises(jsonio.JsonInputError):
        jsonio.loads(doc)


ACCEPTED: list[tuple[bytes, Any]] = [
    (b'  {"a": 1}\n', {"a": 1}),
    (b'{"a": 1, "a": 2}', {"a": 2}),  # the last duplicate wins in both
    (
        b'{"q": 1.5, "n": null, "t": true, "s": "\\u00e9"}',
        {"q": 1.5, "n": None, "t": True, "s": "é"},
    ),
    (b"18446744073709551615", 18446744073709551615),  # the largest unsigned 64-bit value
    (b"-9223372036854775808", -9223372036854775808),
]


@pytest.mark.parametrize("doc,value", ACCEPTED, ids=lambda d: repr(d)[:20])
def test_both_backends_read_the_same_values(backend: str, doc: bytes, value: Any) -> None:
    assert jsonio.loads(doc) == value


def test_an_integer_beyond_64_bits_is_an_int_or_a_float_never_a_wrong_int(backend: str) -> None:
    big = 123456789012345678901234567890
    value = jsonio.loads(str(big).encode())
    if backend == "stdlib":
        assert value == big and type(value) is int
    else:
        # orjson reads it as a float: every integer field refuses a float by name.
        assert type(value) is float


def test_output_is_compact_and_the_same_bytes(backend: str) -> None:
    body = {"results": [{"order_id": 1, "status": "NEW", "events": []}], "é": "x"}
    assert (
        jsonio.dumps(body)
        == '{"results":[{"order_id":1,"status":"NEW","events":[]}],"é":"x"}'.encode()
    )


def test_an_integer_orjson_cannot_encode_goes_through_the_fallback(backend: str) -> None:
    assert jsonio.dumps({"n": 1 << 70}) == b'{"n":1180591620717411303424}'


def test_nan_is_refused_by_the_fallback_and_null_with_orjson(backend: str) -> None:
    if backend == "stdlib":
        with pytest.raises(ValueError):
            jsonio.dumps({"x": float("nan")})
    else:
        assert jsonio.dumps({"x": float("nan")}) == b'{"x":null}'
