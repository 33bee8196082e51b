"""Certificates from an ACME CA (RFC 8555) with HTTP-01 challenges: `files` (the state under
data_dir/acme/ that every worker reads), `issue` (one order, blocking, with certbot's `acme` library,
run in a thread), `renewal` (when to order, backoff, applying the new certificate). docs/acme.md."""
