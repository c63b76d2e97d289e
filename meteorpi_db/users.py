"""Users and roles. Only password hashes are stored (werkzeug's scrypt), never a password."""
from __future__ import annotations

import functools

from meteorpi_model import User, ValidationError
from meteorpi_model.admin import ROLES, USER_ID

from . import green
from .errors import NotFound
from .pool import retry_stale

UPSERT_USER = """
INSERT INTO app_user (user_id, password_hash, roles)
VALUES (%(user_id)s, %(password_hash)s, %(roles)s)
ON CONFLICT (user_id) DO UPDATE SET password_hash = EXCLUDED.password_hash, roles = EXCLUDED.roles
"""
UPDATE_ROLES = "UPDATE app_user SET roles = %(roles)s WHERE user_id = %(user_id)s"
SELECT_USER = "SELECT password_hash, roles FROM app_user WHERE user_id = %(user_id)s"
SELECT_USERS = "SELECT user_id, roles FROM app_user ORDER BY user_id"
DELETE_USER = "DELETE FROM app_user WHERE user_id = %(user_id)s"



def check_password_hash(stored: str, password: str) -> bool:
    """In a real thread under gevent: the hash's ~0.1 s of CPU must not stop other requests."""
    from werkzeug.security import check_password_hash as check  # loaded when a password is checked
    return green.call(check, stored, password)


def generate_password_hash(password: str) -> str:
    from werkzeug.security import generate_password_hash as generate
    return generate(password)


@functools.cache
def dummy_password_hash() -> str:
    """Checked against when the user does not exist, so a wrong name costs as much as a wrong
    password and response time tells nobody which user names are real. Made on first use: a
    hash costs ~0.1 s, which every CLI call would otherwise pay at import."""
    return generate_password_hash("meteorpi-timing-equaliser")


class UserStore:
    """Mixed into MeteorDatabase: user accounts."""

    @retry_stale
    def create_or_update_user(self, user_id: str, password: str | None, roles: list[str] | None) -> User:
        """Create a user or replace their password and roles; ``password=None`` keeps it."""
        user = User(user_id=user_id, roles=sorted(set(roles or [])))
        User.from_dict(user.as_dict())  # names the bad field (user.user_id, user.roles[0])
        with self.transaction() as cur:
            if password is None:
                cur.execute(UPDATE_ROLES, {"user_id": user_id, "roles": user.roles})
                if cur.rowcount == 0:
                    raise NotFound(f"no user {user_id!r}: give a password to create it")
            else:
                if not isinstance(password, str) or not password:
                    raise ValidationError("password", "must not be empty")
                if "\0" in password:  # hashed alike with or without trailing NULs: never one
                    raise ValidationError("password", "must not contain a NUL character")
                cur.execute(UPSERT_USER, {"user_id": user_id, "roles": user.roles,
                                          "password_hash": generate_password_hash(password)})
        return user

    @retry_stale
    def get_user(self, user_id: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else None (same cost whether or not they exist)."""
        try:
            USER_ID.decode(user_id, "user_id")
        except ValidationError:  # no account can have this name (a NUL would even upset libpq)
            check_password_hash(dummy_password_hash(), password or "")
            return None
        with self.transaction() as cur:
            cur.execute(SELECT_USER, {"user_id": user_id})
            row = cur.fetchone()
        if row is None:
            check_password_hash(dummy_password_hash(), password or "")
            return None
        if not check_password_hash(row[0], password or ""):
            return None
        return User(user_id=user_id, roles=list(row[1]))

    @retry_stale
    def get_users(self) -> list[User]:
        """Every user, by name."""
        with self.transaction() as cur:
            cur.execute(SELECT_USERS)
            return [User(user_id=u, roles=list(r)) for u, r in cur.fetchall()]

    @retry_stale
    def delete_user(self, user_id: str) -> None:
        """Remove a user; NotFound if there is none by that name."""
        with self.transaction() as cur:
            cur.execute(DELETE_USER, {"user_id": user_id})
            if cur.rowcount == 0:
                raise NotFound(f"no user {user_id!r}")


__all__ = ["UserStore", "ROLES", "USER_ID"]
