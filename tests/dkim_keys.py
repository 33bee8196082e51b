"""A DKIM signing key for tests, shared by the unit and integration tests (`pythonpath` in pyproject)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from surat.delivery import dkim
from surat.store.keyfiles import FileKeyStore


class RSAKey:
    """An RSA key to DKIM-sign test messages with (dkimpy takes `private_pem`), and the key record
    (RFC 6376 §3.6.1) a fake DNS serves for it."""

    def __init__(self, bits: int = 2048) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public_der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.record = "v=DKIM1; k=rsa; p=" + base64.b64encode(public_der).decode()


def count_signatures(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on every `surat.delivery.dkim.sign` call appends its signing domain to the list returned
    (the server looks the function up at every call, in whichever thread signs)."""
    calls: list[str] = []
    real_sign = dkim.sign

    def counting_sign(message: bytes, domain: str, *args: Any, **kwargs: Any) -> bytes:
        calls.append(domain)
        return real_sign(message, domain, *args, **kwargs)

    monkeypatch.setattr(dkim, "sign", counting_sign)
    return calls


# A SQLite store's DKIM keys are files in its data directory (surat.store.keyfiles); these read and
# write them there, from tests that run no event loop of their own (the server runs in a thread).


def data_dir_keys(data_dir: Path, domain: str) -> tuple[dkim.DkimKey, ...]:
    """The newest key per algorithm that `<data_dir>/dkim/<domain>/` holds."""
    return asyncio.run(dkim.load_keys(FileKeyStore(data_dir), domain))


def ensure_data_dir_keys(data_dir: Path, domain: str, now: datetime) -> tuple[dkim.DkimKey, ...]:
    return asyncio.run(dkim.ensure_keys(FileKeyStore(data_dir), domain, now))


def save_data_dir_keys(data_dir: Path, keys: Iterable[dkim.DkimKey], now: datetime) -> None:
    asyncio.run(dkim.save_keys(FileKeyStore(data_dir), keys, now))
