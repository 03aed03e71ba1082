"""App names: flexnet://<tenant>/<app>. The infrastructure's own apps live under the
reserved tenant `infra`."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import AppError

SCHEME = "flexnet://"
INFRA_TENANT = "infra"
_PART = re.compile(r"[a-z][a-z0-9_-]{0,31}\Z")


def excerpt(value: object, limit: int = 40) -> str:
    """A short, printable piece of a user value for an error message."""
    text = value if isinstance(value, str) else type(value).__name__
    text = "".join(ch if ch.isprintable() else "?" for ch in text[:limit + 1])
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


@dataclass(frozen=True, order=True)
class AppUri:
    tenant: str
    app: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.tenant}/{self.app}"

    @property
    def infra(self) -> bool:
        return self.tenant == INFRA_TENANT


def parse_uri(text: object, tenant_ok: bool = True) -> AppUri:
    """Parse flexnet://tenant/app; AppError quoting a short excerpt when malformed.
    tenant_ok=False refuses the reserved tenant (users deploy under their own)."""
    if not isinstance(text, str) or len(text) > 80:
        raise AppError(excerpt(text), "an app URI is flexnet://<tenant>/<app> "
                       "(at most 80 characters)")
    if not text.startswith(SCHEME):
        raise AppError(excerpt(text), f"an app URI starts with {SCHEME}")
    parts = text[len(SCHEME):].split("/")
    if len(parts) != 2:
        raise AppError(excerpt(text), "an app URI is flexnet://<tenant>/<app>")
    for what, part in zip(("tenant", "app"), parts):
        if not _PART.match(part):
            raise AppError(excerpt(text), f"the {what} name must match [a-z][a-z0-9_-]{{0,31}}")
    uri = AppUri(*parts)
    if uri.infra and not tenant_ok:
        raise AppError(str(uri), f"tenant {INFRA_TENANT!r} is reserved for the lab's own apps")
    return uri
