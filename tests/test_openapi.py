"""The OpenAPI description's version is pyproject.toml's, written once."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from conftest import Api

ROOT = Path(__file__).resolve().parent.parent


def test_openapi_version_is_the_package_version(api: Api) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    r = api.get("/openapi.json")
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    assert doc["info"]["version"] == declared


def test_the_vendored_description_carries_no_private_key_block() -> None:
    # Twilio's Credential parameters use a PEM private key as their example: vendoring drops it,
    # so nothing in the package looks like a private key to a scanner (or to a reader).
    from importlib import resources

    from tokensvc.openapi import CHAT_V2_DATA, CHAT_V2_PATHS, vendor_chat_v2

    assert "PRIVATE KEY" not in resources.files("tokensvc").joinpath(CHAT_V2_DATA).read_text(encoding="utf-8")
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIE...\n-----END RSA PRIVATE KEY-----"
    reference = {"info": {"title": "t"}, "openapi": "3.0.1", "components": {"schemas": {}},
                 "paths": {path: {"description": f"example `{pem}`"} for path in CHAT_V2_PATHS}}
    vendored = vendor_chat_v2(reference)
    assert all("PRIVATE KEY" not in item["description"] for item in vendored["paths"].values())


def test_the_users_list_filters_are_documented_as_extensions_after_twilios_parameters(api: Api) -> None:
    from tokensvc.api.users import FILTERS
    from tokensvc.openapi_own import EXTENSION

    doc: dict[str, Any] = api.get("/openapi.json").json()
    params = doc["paths"]["/v2/Services/{ServiceSid}/Users"]["get"]["parameters"]
    names = [p["name"] for p in params]
    assert names == ["ServiceSid", "PageSize", "Page", "PageToken", *FILTERS]  # SPEC §11, all of them
    for param in params:
        assert bool(param.get(EXTENSION)) == (param["name"] in FILTERS), param
        if param.get(EXTENSION):
            assert param["in"] == "query" and "tokensvc extension" in param["description"]
    identity = params[names.index("Identity")]
    assert identity["schema"]["type"] == "array" and identity["explode"] is True  # repeated, as the API reads it
    # Only the Users list: Twilio's other operations keep their parameters.
    assert not any(p.get(EXTENSION) for item in doc["paths"].values() for m, op in item.items()
                   if isinstance(op, dict) and m != "get" for p in op.get("parameters", []))
    member_list = doc["paths"]["/v2/Services/{ServiceSid}/Channels/{ChannelSid}/Members"]["get"]["parameters"]
    assert not any(p.get(EXTENSION) for p in member_list)
