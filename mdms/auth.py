"""Passwords, sessions, CSRF and login throttling for the web app.

- Passwords (and customers' login verifiers) are hashed with scrypt
  (common/passwords.py) and compared in constant time.
- A session is a random 256-bit token in an HttpOnly, SameSite=Strict
  cookie (Secure when served over HTTPS); the database keeps only its
  SHA-256, with the role and a per-session CSRF token.
- Every state-changing request must carry the session's CSRF token (form
  field `csrf` or header `X-CSRF-Token`); the login form uses a
  double-submit cookie.
- Five failed logins for one account within 15 minutes lock it for 5
  minutes, doubling with each further failure; twenty from one client
  address (a shared NAT has many users) lock that address the same way.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from common.passwords import check_secret, hash_secret

from .store import MdmsStore

__all__ = ["Sessions", "Throttle", "check_secret", "hash_secret"]

SESSION_S = 8 * 3600
MAX_FAILURES = 5
MAX_FAILURES_PER_CLIENT = 20
WINDOW_S = 15 * 60
LOCK_S = 5 * 60
COOKIE = "gv_session"
LOGIN_CSRF_COOKIE = "gv_login_csrf"


class Throttle:
    def __init__(self, store: MdmsStore):
        self.store = store

    def locked_for(self, *keys: str) -> float:
        now = time.time()
        rows = [self.store.failures(k) for k in keys]
        return max([0.0] + [r[2] - now for r in rows if r and r[2] > now])

    def failed(self, *keys: str) -> None:
        now = time.time()
        for k in keys:
            row = self.store.failures(k)
            count, first = (row[0], row[1]) if row and now - row[1] < WINDOW_S else (0, now)
            count += 1
            locked = row[2] if row else 0
            limit = MAX_FAILURES_PER_CLIENT if k.startswith("ip:") else MAX_FAILURES
            if count >= limit:
                locks = count - limit
                locked = now + LOCK_S * (2 ** min(locks, 6))
            self.store.put_failures(k, count, first, locked)

    def succeeded(self, *keys: str) -> None:
        """A success clears the account's count, never the address's: else
        one good login (a portal account of one's own) would reset the
        count between guesses at staff passwords. Only time clears those."""
        for k in keys:
            if not k.startswith("ip:"):
                self.store.clear_failures(k)


class Sessions:
    def __init__(self, store: MdmsStore):
        self.store = store

    def create(self, username: str, role: str) -> tuple[str, str]:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        self.store.add_session(_h(token), username, role, csrf, time.time() + SESSION_S)
        return token, csrf

    def get(self, token: str | None) -> dict | None:
        if not token:
            return None
        s = self.store.session(_h(token))
        if s is None or s["expires"] < time.time():
            return None
        return s

    def end(self, token: str | None) -> None:
        if token:
            self.store.end_session(_h(token))


def _h(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
