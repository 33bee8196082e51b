"""The PostgreSQL store backend (issue 12): several Surat processes and nodes on one database."""
