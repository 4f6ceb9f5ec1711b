"""Which model specs an HTTP client may name.

A model spec is a local folder or a hub ID: over HTTP, any folder the server can read would
be loaded (and kept in memory) on a client's word. Requests may name only the models an
operator lists in ``EMBEDQ_MODELS`` (comma-separated specs; ``*`` allows any), plus the
server's own ``EMBEDQ_MODEL`` and the bundled default. The command line names any model: its
user is the operator.
"""

from __future__ import annotations

from embedq.tasks.settings import Settings, get_settings
from embedq.workers.models import canonical_spec


def allowed_models(settings: Settings) -> frozenset[str] | None:
    """The canonical specs a request may name; None when any is allowed."""
    listed = [m.strip() for m in (settings.models or "").split(",") if m.strip()]
    if "*" in listed:
        return None
    return frozenset(canonical_spec(m) for m in [*listed, settings.model, "default"])


def check_model(spec: str | None, settings: Settings | None = None) -> str | None:
    """``spec`` if a request may name it; a ``ValueError`` saying how to allow it otherwise."""
    if spec is None:
        return None
    allowed = allowed_models(settings or get_settings())
    if allowed is not None and canonical_spec(spec) not in allowed:
        raise ValueError(
            f"model {spec[:200]!r} is not allowed over HTTP: the server's operator lists the "
            "models requests may name in EMBEDQ_MODELS"
        )
    return spec
