"""surat.web.autoconfig without sockets: the Autodiscover request parser and the XML documents."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from surat import metrics
from surat.web.autoconfig import (
    MAX_AUTODISCOVER_REQUEST,
    OUTLOOK_SCHEMA,
    AutodiscoverRequestError,
    autodiscover_response,
    parse_autodiscover_request,
    thunderbird_config,
)

NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
REQUEST = (
    f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{NS}"><Request>'
    "<EMailAddress>alice@example.test</EMailAddress>"
    f"<AcceptableResponseSchema>{OUTLOOK_SCHEMA}</AcceptableResponseSchema>"
    "</Request></Autodiscover>"
).encode()


def test_the_address_is_read_from_autodiscover_request() -> None:
    assert parse_autodiscover_request(REQUEST) == "alice@example.test"
    # without the namespace, without a schema, with whitespace around the text
    plain = b"<Autodiscover><Request><EMailAddress>\n  bob@example.test \n</EMailAddress></Request></Autodiscover>"
    assert parse_autodiscover_request(plain) == "bob@example.test"
    # an EMailAddress elsewhere does not count
    nested = b"<Autodiscover><Request><X><EMailAddress>a@b</EMailAddress></X></Request></Autodiscover>"
    with pytest.raises(AutodiscoverRequestError, match="no EMailAddress"):
        parse_autodiscover_request(nested)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'<!DOCTYPE a [<!ENTITY x "y">]><Autodiscover/>', "DOCTYPE"),
        (b'<!DOCTYPE a SYSTEM "http://127.0.0.1/x.dtd"><Autodiscover/>', "DOCTYPE"),
        (b"<Autodiscover><Request><EMailAddress>&x;</EMailAddress></Request></Autodiscover>", "well-formed"),
        (b"", "well-formed"),
        (b"<a>" * 10, "well-formed"),
        (b"<Autodiscover><Request><EMailAddress>a@b@c</EMailAddress></Request></Autodiscover>", "not a mail"),
        (
            b"<Autodiscover><Request><EMailAddress>a\x01@b</EMailAddress></Request></Autodiscover>",
            "well-formed",
        ),
        (REQUEST.replace(b"2006a", b"2006b"), "response schema"),
        (REQUEST + b" " * MAX_AUTODISCOVER_REQUEST, "too large"),
    ],
)
def test_bad_requests(body: bytes, problem: str) -> None:
    with pytest.raises(AutodiscoverRequestError, match=problem):
        parse_autodiscover_request(body)


def test_documents_escape_and_omit_disabled_roles() -> None:
    ports = {"imaps": 993, "submissions": 465}
    root = ET.fromstring(thunderbird_config("example.test", "mail.example.test", ports))
    assert [(s.tag, s.findtext("port")) for s in root.find("emailProvider")[3:]] == [  # type: ignore[index]
        ("incomingServer", "993"),
        ("outgoingServer", "465"),
    ]
    response = autodiscover_response("<x>&@example.test", "mail.example.test", ports)
    assert b"&lt;x&gt;&amp;@example.test" in response
    names = ET.fromstring(response).iter(f"{{{OUTLOOK_SCHEMA}}}LoginName")
    assert [n.text for n in names] == ["<x>&@example.test"] * 2


def test_alert_rules_use_only_metrics_that_exist() -> None:
    rules = (Path(__file__).parents[2] / "contrib" / "surat-alerts.yml").read_text()
    used = set(re.findall(r"\bsurat_[a-z_]+", rules))
    exposed = {
        name for metric in metrics.REGISTRY.collect() for name in (metric.name, metric.name + "_total")
    }
    exposed |= {"surat_queue_messages", "surat_queue_oldest_age_seconds", "surat_blocked_clients"}
    exposed |= {"surat_acme_consecutive_failures", "surat_acme_certificate_not_after_timestamp_seconds"}
    assert used and used <= exposed, used - exposed
