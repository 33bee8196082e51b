"""THE message package: one header reader, one address parser, one RFC 2047 decoder, one MIME scanner
(`mime`) and the MessageInfo it feeds (`info`), for every caller.

Pure (no asyncio, no store): the SMTP service, DKIM, DMARC, the DSN writer, IMAP SEARCH/FETCH and the
store's MessageInfo all read header sections through `surat.message.headers`, so they agree on what a
field is and where the header ends (issue 11 item 7: a field one parser skipped and another used let a
sender forge From:).
"""
