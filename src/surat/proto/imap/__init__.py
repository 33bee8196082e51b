"""Sans-IO IMAP protocol layer (RFC 9051, RFC 3501 and extensions): no sockets, no asyncio, no store.

- ``reader``: ``CommandReader`` frames bytes into events (commands, literals, APPEND chunks, errors).
- ``parser``: the command grammar; ``commands``: the frozen dataclasses it produces.
- ``seqset``: sequence sets, resolved without expanding ranges.
- ``mutf7``: modified UTF-7 mailbox names for IMAP4rev1 clients.
- ``writer``: response serialisation; ``structure``: ENVELOPE and BODYSTRUCTURE.
"""
