"""Mail in files: mbox, Maildir and .eml, read by `surat import` and written by `surat export`."""
