from __future__ import annotations

from collections.abc import Sequence

from .models import DEFAULT_MAX_LORAS, Endpoint, EndpointKind


def endpoint_register(
    *,
    name: str,
    kind: EndpointKind,
    secret_env: str,
    base_url: str = "",
    models: Sequence[str] = (),
    enabled: bool = True,
    adapter_root: str = "",
    max_loras: int = DEFAULT_MAX_LORAS,
) -> Endpoint:
    """Register an endpoint with the checks the admin form runs (ValidationError naming the
    field). Admins do this in /admin/; scripts and tests through here."""
    endpoint = Endpoint(
        name=name,
        kind=kind,
        base_url=base_url,
        secret_env=secret_env,
        allowed_models="\n".join(models),
        enabled=enabled,
        adapter_root=adapter_root,
        max_loras=max_loras,
    )
    endpoint.full_clean()
    endpoint.save()
    return endpoint
