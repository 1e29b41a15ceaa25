"""Formats shared by the parties: key files, signed records, the wire payload."""

# Every party's log lines, also from a party's child processes.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
