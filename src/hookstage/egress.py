"""Where webhooks may go: the guard against aiming the server at its own network (SSRF).

Whoever edits a workflow chooses the URL the server posts to. Unguarded, that is a way to
reach what only the server can: the cloud's metadata service (169.254.169.254), a database
or an admin page on loopback, the private network. So every address that is not on the
public internet is refused unless an allow-list names it:

- loopback, private (RFC 1918), link-local, unique-local, shared (100.64.0.0/10), multicast,
  unspecified, and every other special-purpose range;
- IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4) are
  judged by the IPv4 address they carry.

The decision is made on the address a connection is actually made to, when it is made:
the transport (``hookstage.pool``) resolves a name itself, puts the addresses through
:meth:`EgressPolicy.admit` and connects its own socket to one of those it kept, an IP
literal taking the same road. A name that resolved to a public address when the workflow
was saved and resolves to a private one now is refused now.

:func:`classify`, :meth:`EgressPolicy.refusal` and :meth:`EgressPolicy.admit` are pure.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = [
    "ALLOW_ENV",
    "ALLOW_OPTION",
    "ERROR_CLASS",
    "WORDS",
    "EgressPolicy",
    "EgressRefused",
    "Refusal",
    "classify",
    "parse_allow",
    "tls_context",
]

ALLOW_OPTION: Final = "--allow-egress"
ALLOW_ENV: Final = "HOOKSTAGE_ALLOW_EGRESS"
ERROR_CLASS: Final = "egress-refused"

Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*texts: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(text) for text in texts)


# The words an allow-list may use for whole kinds of addresses.
WORDS: Final[dict[str, tuple[Network, ...]]] = {
    "loopback": _nets("127.0.0.0/8", "::1/128"),
    "private": _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"),
    "link-local": _nets("169.254.0.0/16", "fe80::/10"),
    "unique-local": _nets("fc00::/7"),
    "shared": _nets("100.64.0.0/10"),
}

# Checked in order; anything else that is not global is "special-purpose".
_KINDS: Final[tuple[tuple[Network, str], ...]] = tuple(
    (net, kind)
    for kind, texts in (
        ("unspecified", ("0.0.0.0/8", "::/128")),  # 0.0.0.0 reaches the host itself on Linux
        ("loopback", ("127.0.0.0/8", "::1/128")),
        ("private", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
        ("link-local", ("169.254.0.0/16", "fe80::/10")),
        ("unique-local", ("fc00::/7",)),
        ("site-local", ("fec0::/10",)),
        ("shared", ("100.64.0.0/10",)),  # carrier-grade NAT; some clouds' metadata lives here
        ("multicast", ("224.0.0.0/4", "ff00::/8")),
        ("reserved", ("240.0.0.0/4",)),  # includes 255.255.255.255
    )
    for net in _nets(*texts)
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")


def _embedded(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address carries, and how, when it carries one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address.sixtofour is not None:
        return address.sixtofour, "6to4"
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64"
    if address in _COMPATIBLE and int(address) > 1:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "IPv4-compatible"
    return None


def _kind(address: Address) -> str | None:
    for net, kind in _KINDS:
        if address.version == net.version and address in net:
            return kind
    return None if address.is_global else "special-purpose"


def classify(address: Address) -> str | None:
    """What kind of non-public address this is ("loopback", "private", "link-local", ...),
    or None for a public one. An IPv6 form of an IPv4 address is judged by the IPv4
    address: ``::ffff:169.254.169.254`` is "link-local (IPv4-mapped)"."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = _embedded(address)
        if carried is not None:
            inner, how = carried
            kind = _kind(inner)
            return None if kind is None else f"{kind} ({how} {inner})"
    return _kind(address)


@dataclass(frozen=True)
class Refusal:
    """One refused address: what it is, and the allow-list entry that would let it through."""

    address: str
    kind: str
    allow: str

    def sentence(self) -> str:
        return f"{self.address} is {self.kind}"


def _how_to_allow(refusals: Sequence[Refusal]) -> str:
    entries = sorted({r.allow for r in refusals if r.allow})
    words = sorted({kind for r in refusals if (kind := r.kind.split(" (")[0]) in WORDS})
    given = ",".join(entries) + (f" or {words[0]}" if len(words) == 1 else "")
    return f"allow it with {ALLOW_OPTION} {given} ({ALLOW_ENV})"


class EgressRefused(OSError):
    """A connection refused by the guard; the message names the setting that allows it."""

    def __init__(self, message: str, refusals: Sequence[Refusal]) -> None:
        super().__init__(errno.EACCES, message)
        self.message = message
        self.refusals = tuple(refusals)

    def __str__(self) -> str:
        return self.message

    @classmethod
    def at(cls, refusal: Refusal) -> EgressRefused:
        return cls(f"{refusal.sentence()}: refused; {_how_to_allow([refusal])}", [refusal])

    @classmethod
    def resolving(cls, host: str, refusals: Sequence[Refusal]) -> EgressRefused:
        listed = ", ".join(f"{r.address} ({r.kind})" for r in refusals[:4])
        if len(refusals) > 4:
            listed += f" and {len(refusals) - 4} more"
        message = f"{host} resolved to {listed}: refused; {_how_to_allow(refusals)}"
        return cls(message, refusals)


def _shown(address: Address) -> str:
    # Python writes ::ffff:169.254.169.254 as ::ffff:a9fe:a9fe: keep the form people know.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def _parse_address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class EgressPolicy:
    """The networks that may be reached although they are not public (``allowed``)."""

    allowed: tuple[Network, ...] = ()

    def refusal(self, address: str) -> Refusal | None:
        """Why a connection to ``address`` (an IP literal) is refused, or None if allowed."""
        parsed = _parse_address(address)
        if parsed is None:
            return Refusal(address, "not an IP address", "")
        kind = classify(parsed)
        if kind is None:
            return None
        carried = _embedded(parsed) if isinstance(parsed, ipaddress.IPv6Address) else None
        target = carried[0] if carried is not None else parsed.__class__(int(parsed))
        if self._allows(parsed) or self._allows(target):
            return None
        return Refusal(_shown(parsed), kind, f"{target}/{target.max_prefixlen}")

    def admit(self, host: str, addresses: Sequence[str]) -> list[str]:
        """The ``addresses`` (IP literals) of ``host`` a connection may be made to, in
        their order: those not refused. Raises EgressRefused when every one is refused,
        with one clear message: the address's own for an IP-literal host, else the
        addresses the name resolved to. No addresses in, none out."""
        kept: list[str] = []
        refused: list[Refusal] = []
        for address in addresses:
            refusal = self.refusal(address)
            if refusal is None:
                kept.append(address)
            else:
                refused.append(refusal)
        if kept or not refused:
            return kept
        if len(refused) == 1 and _parse_address(host) is not None:
            raise EgressRefused.at(refused[0])
        raise EgressRefused.resolving(host, refused)

    def _allows(self, address: Address) -> bool:
        plain = address.__class__(int(address))  # without an IPv6 scope such as %eth0
        return any(plain.version == net.version and plain in net for net in self.allowed)


def parse_allow(values: Iterable[str]) -> EgressPolicy:
    """An EgressPolicy from allow-list entries: CIDRs (``10.0.0.0/8``, ``::1``) or words
    (``loopback``, ``private``, ``link-local``, ``unique-local``, ``shared``), each value
    possibly a comma-separated list (as ``HOOKSTAGE_ALLOW_EGRESS`` gives them).

    Raises ValueError naming the entry that is neither.
    """
    allowed: list[Network] = []
    for value in values:
        for entry in (part.strip() for part in value.split(",")):
            if not entry:
                continue
            word = WORDS.get(entry.lower())
            if word is not None:
                allowed.extend(word)
                continue
            try:
                allowed.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                expected = f"a CIDR such as 10.0.0.0/8 or ::1/128, or one of {', '.join(WORDS)}"
                raise ValueError(f"{ALLOW_OPTION}: {entry!r} is not {expected}") from None
    return EgressPolicy(tuple(dict.fromkeys(allowed)))


@functools.lru_cache(maxsize=64)
def tls_context(ca_bundle: str) -> ssl.SSLContext:
    """A client TLS context that trusts exactly the CA certificates in ``ca_bundle`` (PEM),
    verifying the chain and the host name as always. Cached: one per bundle, so the
    connections it makes share a keep-alive pool.

    Raises ValueError when the text holds no usable certificate.
    """
    try:
        return ssl.create_default_context(cadata=ca_bundle)
    except (ssl.SSLError, ValueError) as exc:
        raise ValueError("caBundle: expected PEM CA certificates") from exc
