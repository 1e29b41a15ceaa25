"""The gateway: data concentrator and Privacy Enhancing System (PES).

It holds the meters' OSCORE secrets, the Paillier *public* key and its own
signing key. A reading's value exists in its memory only while it is being
encrypted; it is never written anywhere.
"""
