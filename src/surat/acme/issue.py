"""One ACME order (RFC 8555 §7.4), from account to certificate chain, with certbot's `acme` library
(which signs the JWS requests, §6.2, and handles nonces). It is blocking (requests): the renewal runs
it in a thread, never on the event loop. The challenge answers go to files (surat.acme.files) that
the http listener of every worker serves."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from acme import challenges, crypto_util, errors, messages
from acme.client import ClientNetwork, ClientV2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwk import JWKRSA

from surat import certs
from surat.acme.files import REVOCATION_REASONS, AcmeFiles
from surat.config import AcmeConfig
from surat.log import fields

log = logging.getLogger(__name__)

USER_AGENT = "surat"
# Seconds for one HTTP request to the CA, and for the whole order (authorizations validated, the
# certificate issued): a CA slower than that is tried again later with backoff (surat.acme.renewal).
REQUEST_TIMEOUT = 30
ORDER_TIMEOUT = 300
ACCOUNT_KEY_BITS = 2048  # RS256, the one algorithm every ACME CA must accept (RFC 8555 §6.2)


class AcmeError(Exception):
    """The order failed; the message is one line for the log and `surat check`."""


@dataclass(frozen=True, slots=True)
class Issued:
    fullchain_pem: bytes  # the certificate first, then its issuers (RFC 8555 §7.4.2 PEM chain)
    key_pem: bytes


def account_key(files: AcmeFiles) -> JWKRSA:
    """The account's key, made once and kept 0600: the account (and its rate limits and
    authorizations) at the CA is tied to it (RFC 8555 §7.3)."""
    files.prepare()
    try:
        pem = files.account_key.read_bytes()
    except FileNotFoundError:
        key = rsa.generate_private_key(public_exponent=65537, key_size=ACCOUNT_KEY_BITS)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        certs.replace_file(files.account_key, pem, secret=True)
    loaded = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise AcmeError(f"{files.account_key} is not an RSA key")
    return JWKRSA(key=loaded)


def _client(config: AcmeConfig, key: JWKRSA) -> ClientV2:
    net = ClientNetwork(key, user_agent=USER_AGENT, timeout=REQUEST_TIMEOUT)
    if config.ca_file is not None:
        # requests' `verify` takes a CA bundle path as well as a bool: the CA's certificate is
        # checked against this bundle instead of the system's, never not checked.
        net.verify_ssl = str(config.ca_file)  # type: ignore[assignment]
    directory = ClientV2.get_directory(config.directory, net)
    return ClientV2(directory, net)


def _register(client: ClientV2, config: AcmeConfig) -> None:
    """RFC 8555 §7.3: create the account, agreeing to the CA's terms of service (the operator did by
    configuring [acme]); an account that exists for this key is used as it is (§7.3.1)."""
    registration = messages.NewRegistration.from_data(email=config.email, terms_of_service_agreed=True)
    try:
        client.new_account(registration)
    except errors.ConflictError as exists:
        client.query_registration(
            messages.RegistrationResource(uri=exists.location, body=messages.Registration())
        )


def _http01(authorization: messages.AuthorizationResource) -> messages.ChallengeBody:
    for challenge in authorization.body.challenges:
        if isinstance(challenge.chall, challenges.HTTP01):
            return challenge
    raise AcmeError(f"the CA offers no http-01 challenge for {authorization.body.identifier.value}")


def issue(config: AcmeConfig, hostnames: Sequence[str], files: AcmeFiles) -> Issued:
    """Order a certificate for `hostnames` (blocking). AcmeError, or the library's errors, on failure."""
    key = account_key(files)
    client = _client(config, key)
    _register(client, config)
    # A new key for every certificate, so a renewal also rotates it. ECDSA P-256: what every CA and
    # client supports, and ~40x cheaper than RSA-2048 for the reload's key check (docs/tls-reload.md).
    certificate_key = ec.generate_private_key(ec.SECP256R1())
    key_pem = certificate_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    order = client.new_order(crypto_util.make_csr(key_pem, list(hostnames)))
    tokens: list[str] = []
    try:
        for authorization in order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue  # RFC 8555 §7.1.4: the CA may reuse an authorization validated before
            challenge = _http01(authorization)
            response, key_authorization = challenge.response_and_validation(key)
            token = challenge.chall.encode("token")
            files.put_challenge(token, key_authorization)
            tokens.append(token)
            # RFC 8555 §7.5.1: tell the CA the answer is in place; it then fetches it over HTTP.
            client.answer_challenge(challenge, response)
            log.info("acme.challenge_ready", extra=fields(name=authorization.body.identifier.value))
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
        # RFC 8555 §7.4: poll the authorizations, finalize with the CSR, download the chain.
        order = client.poll_and_finalize(order, deadline)
    finally:
        for token in tokens:
            files.remove_challenge(token)
    if not order.fullchain_pem:
        raise AcmeError("the CA finalized the order without a certificate")
    return Issued(order.fullchain_pem.encode("ascii"), key_pem)


def revoke(config: AcmeConfig, files: AcmeFiles, reason: str) -> x509.Certificate:
    """Revoke the served certificate with the account that ordered it (RFC 8555 §7.6, signed with
    the account key); blocking. The revoked certificate, whose serial the caller records."""
    try:
        leaf = x509.load_pem_x509_certificate(files.cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise AcmeError(f"{files.cert}: no certificate to revoke ({exc})") from None
    if leaf.issuer == leaf.subject:
        raise AcmeError(f"{files.cert} is the self-signed placeholder, not a certificate from the CA")
    client = _client(config, account_key(files))
    _register(client, config)
    client.revoke(leaf, REVOCATION_REASONS[reason])
    return leaf
