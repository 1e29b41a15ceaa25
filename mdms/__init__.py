"""The MDMS: the utility's meter data management. It keeps users, sessions
and what the key authority released, and serves the web dashboard and the
customer portal. It never holds a key that opens a reading."""
