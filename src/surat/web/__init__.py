"""The embedded HTTP layer (issue 13): aiohttp in the server's own event loop.

Three listeners, each its own aiohttp application (`surat.web.server`):
- `https` (TLS): client autoconfiguration (`autoconfig`), the MTA-STS policy (`policy`), later the
  account pages; never an admin page;
- `http`: a redirect to https, and the ACME HTTP-01 hook (`redirect`);
- `admin` (loopback by default): /metrics (`admin`), later the admin console.

Pages are jinja2 templates under templates/ rendered with autoescaping (`templating`); shared
security headers, limits and timeouts are in `security`.
"""
