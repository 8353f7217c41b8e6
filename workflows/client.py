"""One way to connect: the pydantic data converter and failure types, for API, worker and tests."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from settings import Settings
from workflows.codec import data_converter
from workflows.sealing import SealingInterceptor, seal_keyring


async def connect(settings: Settings) -> Client:
    # API and worker both connect here, so both encrypt with the same keys (DESIGN §8);
    # ONEFAMILY_ENCRYPT_PAYLOADS=false is handled inside data_converter(). Both also seal
    # every command they send: the workers obey nothing else (DESIGN §9, domain.command_seal).
    return await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        interceptors=[SealingInterceptor(seal_keyring(settings))],
    )


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register our custom search attributes where missing (test server, external cluster)."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    from models.search import CLI_TYPES

    kinds = {
        "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
        "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    }
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        known = set(existing.custom_attributes)
    except RPCError as error:  # the time-skipping test server cannot list, only add
        if error.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        known = set()
    missing = {name: kinds[kind] for name, kind in CLI_TYPES.items() if name not in known}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
