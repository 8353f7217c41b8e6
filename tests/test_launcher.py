"""The embedded Temporal dev server: starts, registers our search attributes, restarts on
the same SQLite file (the --search-attribute flags must be repeatable), also after a crash."""

from pathlib import Path

import pytest
from temporalio.api.operatorservice.v1 import (
    ListSearchAttributesRequest,
    RemoveSearchAttributesRequest,
)
from temporalio.client import Client

from launcher import EmbeddedTemporal, LauncherError, free_port, wait_for_temporal
from models.search import CLI_TYPES, STAGE


async def _custom_attributes(client: Client, namespace: str) -> set[str]:
    resp = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    return set(resp.custom_attributes)


async def test_embedded_temporal_restarts_on_same_db(tmp_path: Path) -> None:
    server = EmbeddedTemporal(tmp_path / "data", free_port(), free_port(), "onefamily-test")
    try:
        server.start()
        client = await server.wait_ready()
        assert set(CLI_TYPES) <= await _custom_attributes(client, server.namespace)
        server.stop()
        assert not server.running
        assert server.db_path.exists()

        server.start()  # same db file, same --search-attribute flags
        client = await server.wait_ready()
        assert set(CLI_TYPES) <= await _custom_attributes(client, server.namespace)

        server.kill()  # unclean shutdown: SQLite must recover
        server.start()
        await server.wait_ready()

        # External-server path: a missing attribute gets registered again.
        await client.operator_service.remove_search_attributes(
            RemoveSearchAttributesRequest(namespace=server.namespace, search_attributes=[STAGE.name])
        )
        client = await wait_for_temporal(server.target, server.namespace, register=True)
        assert set(CLI_TYPES) <= await _custom_attributes(client, server.namespace)

        # A second server on the same port is refused before it starts.
        with pytest.raises(LauncherError, match="in use"):
            EmbeddedTemporal(tmp_path / "clash", server.port, free_port()).start()
    finally:
        server.stop()
    assert not server.running


async def test_wait_ready_reports_a_dead_server(tmp_path: Path) -> None:
    server = EmbeddedTemporal(tmp_path, free_port(), free_port())
    server.db_path.mkdir()  # SQLite can't open a directory: the server exits at once
    server.start()
    try:
        with pytest.raises(LauncherError, match="exited with code"):
            await server.wait_ready(timeout=20)
    finally:
        server.stop()
