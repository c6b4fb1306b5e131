"""API keys: `Authorization: Bearer <key>`, each key a tenant, only sha256 digests kept.

Keys are high-entropy random strings, so a plain sha256 is enough (no password stretching needed);
digests are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

KEY_PREFIX = "sbx_"
TENANT_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")
# Every request is this tenant when authentication is disabled.
ANONYMOUS_TENANT = "anonymous"


class KeyConfigError(ValueError):
    """A key entry is malformed; the message names the entry."""


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key_entries(text: str, *, source: str) -> dict[str, str]:
    """`tenant:digest` entries (lines or commas; `#` comments) -> {digest: tenant}."""
    keys: dict[str, str] = {}
    for number, line in enumerate(re.split(r"[\n,]", text), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        tenant, _, key_digest = entry.partition(":")
        tenant, key_digest = tenant.strip(), key_digest.strip().lower()
        if not TENANT_PATTERN.match(tenant):
            raise KeyConfigError(
                f"{source} entry {number}: tenant {tenant!r} must be lowercase letters, digits and '-' (at most 63)"
            )
        if not DIGEST_PATTERN.match(key_digest):
            raise KeyConfigError(
                f"{source} entry {number}: expected `tenant:<64 hex chars of sha256(key)>`; "
                "`sandbox-api new-key TENANT` prints one"
            )
        keys[key_digest] = tenant
    return keys


class KeyRing:
    """The configured keys; `tenant_for` answers which tenant a presented key belongs to."""

    def __init__(self, digests: dict[str, str]):
        self._digests = dict(digests)

    @classmethod
    def load(cls, *, keys_file: str, keys_env: str) -> KeyRing:
        digests = {}
        if keys_file:
            digests.update(parse_key_entries(Path(keys_file).read_text(), source=keys_file))
        if keys_env:
            digests.update(parse_key_entries(keys_env, source="SANDBOX_API_KEYS"))
        return cls(digests)

    def __len__(self) -> int:
        return len(self._digests)

    def add(self, key: str, tenant: str) -> None:
        self._digests[digest(key)] = tenant

    def tenant_for(self, key: str) -> str | None:
        presented = digest(key)
        tenant = None
        for known, owner in self._digests.items():  # look at every entry: no early exit to time
            if hmac.compare_digest(known, presented):
                tenant = owner
        return tenant
