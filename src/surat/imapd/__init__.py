"""The IMAP server (RFC 9051 / RFC 3501 and extensions): ``session.IMAPService`` builds the listener handlers.

``session`` runs the connection loop, ``dispatch`` holds the command table, ``auth``, ``mailboxes``,
``messages`` and ``fetch`` the handlers; ``view`` is the per-session picture of the selected mailbox.
"""
