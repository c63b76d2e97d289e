"""Who may do what (users and roles) and where a node exports to (export configurations)."""
from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from typing import ClassVar

from .fields import Bool, Choice, Model, Nested, Str, UUIDCodec, field, ListOf
from .search import EventSearch, FileRecordSearch

ROLES = ("user", "camera_admin", "import")
USER_ID = Str(64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
EXPORT_NAME = Str(64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# A note for people, shown on one line of `meteorpi export list`: any text but control
# characters (a newline would break the listing, an escape sequence would drive the terminal).
# Checked where a description is given (`export add`); the stored field keeps the older, looser
# rule so configurations written before still read.
EXPORT_DESCRIPTION = Str(1024, min_length=0, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")


@dataclass(eq=True)
class User(Model):
    """An account: ``user`` reads, ``camera_admin`` manages cameras, ``import`` delivers data."""
    wire_name: ClassVar[str] = "user"
    user_id: str = field(USER_ID)
    roles: list[str] = field(ListOf(Choice(*ROLES), len(ROLES)), default_factory=list)

    def has_role(self, role: str) -> bool:
        """Whether this user holds ``role``."""
        return role in self.roles

    def get_roles(self) -> list[str]:
        """The user's roles, for Flask-HTTPAuth's ``get_user_roles``."""
        return list(self.roles)


class _SearchCodec(Nested):
    """The search of an export configuration: its class follows the configuration's type."""

    def __init__(self):
        super().__init__(EventSearch)

    def decode(self, value, path):
        # The type field is decoded separately; _check re-reads the dict as the right class.
        if isinstance(value, dict) and any(k in value for k in ("mime_type", "semantic_type", "exclude_events")):
            return FileRecordSearch._decode(value, path)
        return EventSearch._decode(value, path)

    def schema(self, defs):
        return {"anyOf": [Nested(EventSearch).schema(defs), Nested(FileRecordSearch).schema(defs)]}



# Where a plain-HTTP target keeps its Basic auth password on the site's own network: loopback,
# RFC 1918, link-local and IPv6 unique local addresses.
LOCAL_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
    "fe80::/10", "fc00::/7"))


def public_host(host: str) -> bool:
    """Whether ``host`` (as the HTTP client connects to it: a name, or an IP literal without
    brackets) is not known to be local, so a password sent there in clear crosses networks nobody
    vouches for. Only ``localhost`` and IP literals in LOCAL_NETWORKS count as local: any other
    host name may resolve anywhere, today or later. The URL is parsed by the caller with the
    sender's own parser (meteorpi_export.targets): a second parse here could read another host."""
    host = host.rstrip(".").lower()
    if host == "localhost":
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # fe80::1%eth0
    except ValueError:
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return not any(address in network for network in LOCAL_NETWORKS)


@dataclass(eq=True)
class ExportConfiguration(Model):
    """Where and what a node exports: a target ``/import`` URL, credentials and a search.

    ``password`` is the target's password for ``user_id``; it must be kept to authenticate,
    so it is stored, but ``as_dict(redact=True)`` and ``repr`` never show it.
    """
    wire_name: ClassVar[str] = "export"
    name: str = field(EXPORT_NAME)
    target_url: str = field(Str(2048, pattern=r"^https?://[!-~]+$"))
    user_id: str = field(USER_ID)
    password: str = field(Str(1024, min_length=0))
    type: str = field(Choice("event", "file"))
    search: EventSearch | FileRecordSearch = field(_SearchCodec(), doc="which entities to export")
    enabled: bool = field(Bool(), default=True)
    config_id: uuid.UUID = field(UUIDCodec(), default_factory=uuid.uuid4, required=True)
    description: str | None = field(Str(1024, min_length=0), optional=True)

    def __repr__(self) -> str:
        return (f"ExportConfiguration(name={self.name!r}, target_url={self.target_url!r}, "
                f"user_id={self.user_id!r}, password='***', type={self.type!r}, enabled={self.enabled})")

    def as_dict(self, redact: bool = False) -> dict:
        out = super().as_dict()
        if redact:
            out["password"] = "***"
        return out

    def _check(self, path):
        expected = EventSearch if self.type == "event" else FileRecordSearch
        if not isinstance(self.search, expected):
            self.search = expected.from_dict(self.search.as_dict(), f"{path}.search")
