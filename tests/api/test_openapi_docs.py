"""The OpenAPI document reads as documentation: every operation has a tag that is
declared, a description, and every example validates against its own schema."""

from __future__ import annotations

from test_openapi import DOC, OPERATIONS, _validator


def test_every_operation_has_a_declared_tag_and_a_description() -> None:
    declared = {tag["name"] for tag in DOC["tags"]}
    assert all(tag.get("description") for tag in DOC["tags"])
    used = set()
    for path, method in OPERATIONS:
        operation = DOC["paths"][path][method]
        assert len(operation["tags"]) == 1 and operation["tags"][0] in declared, path
        assert len(operation["description"]) > len(operation["summary"]), path
        used.add(operation["tags"][0])
    assert used == declared


def test_request_and_response_examples_match_their_schemas() -> None:
    checked = 0
    for path, method in OPERATIONS:
        operation = DOC["paths"][path][method]
        body = operation.get("requestBody")
        if body is not None:
            media = body["content"]["application/json"]
            assert media["examples"], path
            for example in media["examples"].values():
                _validator(DOC, media["schema"]).validate(example["value"])
                checked += 1
        ok = operation["responses"].get("200", {}).get("content", {}).get("application/json")
        if ok is not None and "example" in ok:
            _validator(DOC, ok["schema"]).validate(ok["example"])
            checked += 1
    assert checked >= 10


def test_a_wrong_example_is_caught() -> None:
    import jsonschema
    import pytest

    media = DOC["paths"]["/v1/orders"]["post"]["requestBody"]["content"]["application/json"]
    bad = {**media["examples"]["limit"]["value"], "price": "190.12"}
    with pytest.raises(jsonschema.ValidationError):
        _validator(DOC, media["schema"]).validate(bad)


def test_symbols_document_their_price_scale() -> None:
    item = DOC["components"]["schemas"]["Symbols"]["properties"]["symbols"]["items"]
    assert "price_scale" in item["required"]
    assert "quote currency" in item["properties"]["price_scale"]["description"]
