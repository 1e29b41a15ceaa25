"""Formats shared by the parties: key files, signed records, the wire payload."""
