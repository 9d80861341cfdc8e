"""API keys for every edge: the `[auth]` section, a key store both edges share, constant-time checks.

```toml
[auth]
api_keys = ["k3y-0f-at-least-16-chars"]   # inline keys (GLICLASS_AUTH__API_KEYS="k1,k2" from the environment)
api_keys_file = "/run/secrets/gliclass-keys" # one key per line, '#' comments; re-read on SIGHUP
public_metrics = false                      # true: /metrics answers without a key
```

With neither `api_keys` nor `api_keys_file` set, authentication is off. The store never keeps a
key itself, only its SHA-256 digest, and compares a presented key with every stored digest through
`hmac.compare_digest` without stopping at the first match, so neither the time taken nor any log
line says which key, or how much of one, matched. The caller's identity is a fingerprint
(`key-` and the first 8 hex digits of the digest) that logs and call contexts may carry.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gliclass_core.errors import ConfigError

#: RFC 6750 `b64token` (token68): what a bearer credential may contain.
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MIN_KEY_CHARS = 16
MAX_KEY_CHARS = 4096
#: Keys a store holds at most (a file of millions of lines is a mistake, and each check visits all).
MAX_KEYS = 1024
_KEY_RULE = f"letters, digits and -._~+/ (token68), {MIN_KEY_CHARS} to {MAX_KEY_CHARS} characters"


@dataclass(frozen=True)
class AuthConfig:
    """The `[auth]` section; `repr` never shows the keys."""

    api_keys: tuple[str, ...] = field(default=(), repr=False)
    api_keys_file: str | None = None
    public_metrics: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys) or self.api_keys_file is not None


@dataclass(frozen=True)
class Caller:
    """Who made a call: `anonymous` with authentication off, else the key's fingerprint."""

    name: str


ANONYMOUS = Caller("anonymous")
#: The caller of the call being handled (set by each edge's guard for the duration of the call).
current_caller: ContextVar[Caller] = ContextVar("gliclass_caller", default=ANONYMOUS)


def parse_auth_config(section: Mapping[str, Any]) -> AuthConfig:
    """Validate the raw `[auth]` table (from `AppConfig.section("auth")`); never quotes a key."""
    table = dict(section)
    unknown = set(table) - {"api_keys", "api_keys_file", "public_metrics"}
    if unknown:
        raise ConfigError(f"[auth] unknown key(s): {', '.join(sorted(unknown))}")
    keys = _key_list(table.get("api_keys", ()))
    path = table.get("api_keys_file")
    if path is not None and (not isinstance(path, str) or not path):
        raise ConfigError("[auth] api_keys_file must be a file path")
    public = table.get("public_metrics", False)
    if not isinstance(public, bool):
        raise ConfigError("[auth] public_metrics must be true or false")
    for number, key in enumerate(keys, 1):
        _check_key(key, f"[auth] api_keys: key {number}")
    return AuthConfig(api_keys=keys, api_keys_file=path, public_metrics=public)


def _key_list(value: Any) -> tuple[str, ...]:
    """A TOML array of keys, or (from the environment) a string: a TOML array or keys split at commas."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                raise ConfigError("[auth] api_keys is not a valid TOML array of strings") from None
        else:
            return tuple(part for part in re.split(r"[\s,]+", text) if part)
    if not isinstance(value, list | tuple) or not all(isinstance(k, str) for k in value):
        raise ConfigError("[auth] api_keys must be a list of strings")
    return tuple(value)


def _check_key(key: str, where: str) -> None:
    if not MIN_KEY_CHARS <= len(key) <= MAX_KEY_CHARS or not _TOKEN68.fullmatch(key):
        raise ConfigError(f"{where} is not a valid API key (use {_KEY_RULE})")


def read_keys(config: AuthConfig) -> tuple[str, ...]:
    """The inline keys and those in `api_keys_file`; ConfigError (naming a line, never a key) otherwise."""
    keys = list(config.api_keys)
    if config.api_keys_file is not None:
        path = config.api_keys_file
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"[auth] api_keys_file: cannot read {path}: {why}") from None
        for number, line in enumerate(text.splitlines(), 1):
            key = line.split("#", 1)[0].strip()
            if key:
                _check_key(key, f"[auth] api_keys_file {path}: line {number}")
                keys.append(key)
    if config.enabled and not keys:
        # Configured but empty (an emptied or truncated file) must not silently run without keys.
        raise ConfigError("[auth] has no keys: api_keys and api_keys_file are both empty")
    if len(keys) > MAX_KEYS:
        raise ConfigError(f"[auth] has {len(keys)} keys; at most {MAX_KEYS} are supported")
    return tuple(keys)


def _digest(key: str) -> bytes:
    # 'replace': a presented credential may hold anything, lone surrogates included; it just won't match.
    return hashlib.sha256(key.encode("utf-8", "replace")).digest()


def fingerprint(digest: bytes) -> str:
    return f"key-{digest.hex()[:8]}"


class KeyStore:
    """The API keys in force (as digests); `verify` checks a presented key, `reload` swaps them.

    Thread-safe: the digests are replaced as one tuple, so a check sees the old keys or the new.
    """

    def __init__(self, config: AuthConfig | None = None) -> None:
        self.config = config or AuthConfig()
        self._digests = self._load(self.config)
        self._lock = threading.Lock()

    @staticmethod
    def _load(config: AuthConfig) -> tuple[bytes, ...]:
        return tuple(_digest(key) for key in read_keys(config)) if config.enabled else ()

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    @property
    def public_metrics(self) -> bool:
        return self.config.public_metrics

    def __len__(self) -> int:
        return len(self._digests)

    def verify(self, key: str | None) -> Caller | None:
        """The caller `key` identifies (ANONYMOUS with authentication off), or None: not a known key."""
        digests = self._digests
        if not digests:
            return ANONYMOUS
        if key is None:
            return None
        presented = _digest(key)
        found: bytes | None = None
        for digest in digests:  # every digest, always: the time does not depend on which one matches
            if hmac.compare_digest(presented, digest):
                found = digest
        return None if found is None else Caller(fingerprint(found))

    def verify_authorization(self, header: str | None) -> Caller | None:
        """`verify` the key in an `Authorization: Bearer <key>` header value (None: absent)."""
        return self.verify(bearer_token(header))

    def reload(self, config: AuthConfig) -> int:
        """Re-read the keys of `config` and put them in force; return how many.

        Raises ConfigError (the running keys stay) when they cannot be read, or when the new config
        would turn authentication off: a running server never opens up because of a reload.
        """
        digests = self._load(config)
        if self._digests and not digests:
            raise ConfigError("[auth] a reload cannot turn authentication off; restart to do that")
        with self._lock:
            self.config, self._digests = config, digests
        return len(digests)


def bearer_token(header: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <token>` value; None when absent or another scheme."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
