"""A loopback HTTP endpoint on the process that owns the ClickHouse client.

chDB lets one process open a path, so while the pipeline runs, `evalstream sql` and `why`
send their (read-only) queries here. POST /query {"sql": ...} -> {"columns", "types", "rows"};
GET /health -> status and counters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from pipeline.storage.database import Database

log = logging.getLogger(__name__)


class QueryServer:
    def __init__(self, database: Database, health: Callable[[], dict[str, Any]], port: int = 0) -> None:
        self._db = database
        self._health = health
        self._port = port
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    async def start(self) -> str:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/query", self._query)
        app.router.add_get("/health", self._get_health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _query(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            sql = body["sql"]
            if not isinstance(sql, str) or not sql.strip():
                raise ValueError("'sql' must be a non-empty string")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return _json({"error": f"bad request: {exc}"}, status=400)
        try:
            columns, types, rows = await self._db.query(sql)
        except Exception as exc:  # noqa: BLE001 - a bad query is answered as an error, never a crash
            return _json({"error": f"{type(exc).__name__}: {exc}"}, status=422)
        return _json({"columns": columns, "types": types, "rows": rows})

    async def _get_health(self, request: web.Request) -> web.Response:
        return _json(self._health())


def _json(data: Any, status: int = 200) -> web.Response:
    body = orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)
    return web.Response(body=body, status=status, content_type="application/json")
