"""The key authority: holds the Paillier private key and decrypts only what
the privacy policy allows, logging every decision in a hash-chained log."""
