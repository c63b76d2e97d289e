"""HTTP Basic authentication against the database's users, with roles.

A check goes to the database: ``db.get_user`` computes a password hash even for a user that
does not exist, so response time tells nobody which user names are real. A hash costs ~0.1 s of
CPU by design, which would cap an exporter at a few requests a second, so a *verified* login is
remembered for ``server.auth_cache_seconds``: keyed by the user and an HMAC of the password under
a key that never leaves the process (no password is kept), holding only the roles. Wrong
passwords are never remembered: each costs the full hash. A changed password or role applies
within that time. No or wrong credentials answer 401 with ``WWW-Authenticate``; a real user without the
role answers 403; both carry a JSON body. The user is kept on ``flask.g`` for the request, so a
receiver can record who imported what (``BaseImportReceiver.get_importing_user_id``).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import threading
from typing import Callable, Iterable, Iterator

from cachetools import TTLCache

from flask import Response, g
from flask_httpauth import HTTPBasicAuth

from meteorpi_db import MeteorDatabase
from meteorpi_db.users import dummy_password_hash
from meteorpi_model import User, ValidationError
from meteorpi_model.admin import USER_ID

from .errors import failed

REALM = "meteorpi"


def _could_be_user_id(user_id: str) -> bool:
    try:
        USER_ID.decode(user_id, "user_id")
    except ValidationError:
        return False
    return True


def current_user() -> User | None:
    """The user this request authenticated as, if any."""
    return g.get("meteorpi_user")


class Authenticator:
    """Flask-HTTPAuth wired to ``get_db()``'s users; ``required(roles)`` decorates a view."""

    def __init__(self, get_db: Callable[[], MeteorDatabase], cache_seconds: float = 60.0):
        self._get_db = get_db
        self._key = os.urandom(32)
        self._verified: TTLCache | None = TTLCache(maxsize=4096, ttl=cache_seconds) if cache_seconds > 0 else None
        self._lock = threading.Lock()  # held only for a dict operation, never across a wait
        self._checking: dict[tuple[str, bytes], list] = {}  # credentials being checked: [lock, waiting]
        dummy_password_hash()  # made now, so the first unknown user is not slower than the rest
        self.http = HTTPBasicAuth(realm=REALM)
        self.http.verify_password(self._verify_password)
        self.http.get_user_roles(self._get_user_roles)
        self.http.error_handler(self._auth_error)
        self.http.auth_error_callback = _challenge_only_on_401(self.http.auth_error_callback)

    def required(self, roles: Iterable[str] | None = None) -> Callable:
        """Decorator: the view runs only for a user holding any one of ``roles`` (any user if
        None)."""
        return self.http.login_required(role=list(roles) if roles else None)

    def _verify_password(self, user_id: str, password: str) -> User | None:
        if not user_id:
            return None  # no credentials at all: nothing to look up, no name to leak
        if not _could_be_user_id(user_id):
            return None  # no such user can exist (a NUL would even make the driver raise)
        if password and "\0" in password:
            # No password holds one (refused when set), and the hash would not tell: scrypt keys
            # HMAC with the password, zero-padded, so "pw" and "pw\0" hash alike.
            return None
        token = (user_id, hmac.new(self._key, (password or "").encode("utf-8", "surrogatepass"),
                                   hashlib.sha256).digest())
        user = self._remembered(token)
        if user is None:
            with self._one_check_at_a_time(token):
                user = self._remembered(token)  # verified while this request waited
                if user is None:
                    user = self._get_db().get_user(user_id, password)
                    if user is not None and self._verified is not None:
                        with self._lock:
                            self._verified[token] = tuple(user.roles)
        g.meteorpi_user = user
        return user

    def _remembered(self, token: tuple[str, bytes]) -> User | None:
        if self._verified is None:
            return None
        with self._lock:
            roles = self._verified.get(token)
        return None if roles is None else User(user_id=token[0], roles=list(roles))

    @contextlib.contextmanager
    def _one_check_at_a_time(self, token: tuple[str, bytes]) -> Iterator[None]:
        """Requests with the same credentials check them one after the other, so only the first
        pays the hash: an exporter opens its uploads at once, and each used to hash the same
        password beside the others (four checks, ~0.4 s of CPU, at the start of a replication
        on a fresh server). A wrong password is not remembered, so each request with it still
        pays its own hash after waiting its turn. The lock is made here, at request time, so it
        is the kind the worker's requests wait on (a greenlet's under gevent)."""
        with self._lock:
            entry = self._checking.get(token)
            if entry is None:
                entry = self._checking[token] = [threading.Lock(), 0]
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if not entry[1]:
                    del self._checking[token]

    @staticmethod
    def _get_user_roles(user: User) -> list[str]:
        return user.get_roles()

    @staticmethod
    def _auth_error(status: int) -> Response:
        if status == 403:
            user = current_user()
            name = user.user_id if user else "this user"
            return failed(f"{name} does not hold a role that may use this resource", 403)
        return failed("authentication required: HTTP Basic credentials of a meteorpi user", 401)


def _challenge_only_on_401(answer: Callable[[int], Response]) -> Callable[[int], Response]:
    """Flask-HTTPAuth puts ``WWW-Authenticate`` on its 403s too, which asks a browser for other
    credentials when the user's were right but lack the role: a 403 carries no challenge."""
    @functools.wraps(answer)
    def wrapper(status: int) -> Response:
        response = answer(status)
        if response.status_code == 403:
            response.headers.pop("WWW-Authenticate", None)
        return response
    return wrapper
