"""Starting and stopping an emulator in-process: :class:`Emulator` and :func:`run_emulator`.

::

    async with run_emulator(users=[UserSpec(email="e@example.com", password="Passw0rd1")]) as emu:
        async with aiohttp.ClientSession(emu.base_url) as http:
            ...
        emu.fail_next(3, method="POST", path="/api/v1/streams")

Starting one costs a few milliseconds (no subprocess, port chosen by the OS), so tests can start
one each.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from multibackend_streamsource.emulator.app import build_app
from multibackend_streamsource.emulator.auth import TokenService
from multibackend_streamsource.emulator.config import EmulatorConfig
from multibackend_streamsource.emulator.control import EmulatorControl
from multibackend_streamsource.emulator.faults import Faults
from multibackend_streamsource.emulator.flags import Flags, FlagSetting
from multibackend_streamsource.emulator.ratelimit import RateLimiter
from multibackend_streamsource.emulator.sqlite import SqlitePersistence
from multibackend_streamsource.emulator.state import EmulatorState
from multibackend_streamsource.emulator.store import Store

__all__ = ["Emulator", "run_emulator"]


class Emulator(EmulatorControl):
    """A StreamSource emulator served by this process's event loop.

    Use ``async with Emulator(config) as emu`` (or :func:`run_emulator`); ``base_url`` is
    ``http://HOST:PORT`` once started. Every control method of :class:`EmulatorControl` is
    available on it.
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        super().__init__(None)
        self.config = config or EmulatorConfig()
        self._runner: web.AppRunner | None = None
        self._persistence: SqlitePersistence | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator is not running")
        return self._port

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def state(self) -> EmulatorState:
        return self._state

    async def start(self) -> None:
        """Load state, bind the port and start serving."""
        cfg = self.config
        settings: dict[str, str] = {}
        store = Store()
        if cfg.db_path is not None:
            self._persistence = SqlitePersistence(cfg.db_path)
            loaded = await self._persistence.open()
            store = Store(self._persistence)
            store.load(loaded.users, loaded.streams, loaded.denylist)
            settings = loaded.settings
        secret = cfg.secret or settings.get("secret") or secrets.token_urlsafe(48)
        if self._persistence is not None and settings.get("secret") != secret:
            await self._persistence.save_setting("secret", secret)
        flags = Flags(
            {
                name[len("flag:") :]: FlagSetting.parse(value)
                for name, value in settings.items()
                if name.startswith("flag:")
            }
        )
        faults = Faults(seed=cfg.seed)
        faults.set(latency=cfg.latency, error_rate=cfg.error_rate)
        self._current = EmulatorState(
            store=store,
            tokens=TokenService(secret),
            flags=flags,
            limiter=RateLimiter(
                cfg.rate_limit, cfg.rate_period, localhost_exempt=cfg.localhost_exempt
            ),
            faults=faults,
            signup_500=cfg.signup_500,
        )
        try:
            await self.set_flags(cfg.flags)
            for spec in cfg.users:
                await self.add_user(
                    spec.email, spec.password, spec.role, service_account=spec.service_account
                )
            app = build_app(self._current, max_body=cfg.max_body)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
            site = web.TCPSite(self._runner, cfg.host, cfg.port)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        self._port = site_port(site)

    async def stop(self) -> None:
        """Stop serving and close the database file. The handle still answers ``counters()``,
        ``streams()`` and the like afterwards."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._persistence is not None:
            await self._persistence.close()
            self._persistence = None
        self._port = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def site_port(site: web.TCPSite) -> int:
    """The port a started site listens on (the OS picks it for port 0)."""
    sockets = getattr(site._server, "sockets", None)
    if not sockets:
        raise RuntimeError("the emulator's site has no listening socket")
    port: int = sockets[0].getsockname()[1]
    return port


@asynccontextmanager
async def run_emulator(
    config: EmulatorConfig | None = None, **settings: Any
) -> AsyncIterator[Emulator]:
    """Start an emulator on 127.0.0.1 and a free port; yield its handle; stop it on exit.

    Give an :class:`EmulatorConfig`, or its fields as keyword arguments.
    """
    emulator = Emulator(config if config is not None else EmulatorConfig(**settings))
    async with emulator:
        yield emulator
