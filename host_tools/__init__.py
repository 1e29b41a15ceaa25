"""Host tools: the `gridveil` command and what it runs."""
