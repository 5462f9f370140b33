"""Emulator throughput against a bare aiohttp handler returning the same JSON.

GET /api/v1/streams/:id and POST /api/v1/streams with 32 concurrent clients. Both servers run
as subprocesses (one process each, like the emulator command), measured in the same run; the
bare server answers the very JSON the emulator produced, with no auth, validation or storage.
The ratio is emulator / bare throughput (goal >= 0.5).

    .venv/bin/python benchmarks/bench_emulator.py [--duration SECONDS] [--concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
from aiohttp import web

EMAIL = "bench@example.com"
PASSWORD = "Passw0rd1"
BODY = {
    "source": "bench",
    "link": "https://twitch.tv/bench",
    "status": "live",
    "platform": "twitch",
}


def serve_bare(payload_file: str) -> None:
    """Serve the fixed answers from ``payload_file`` and print the base URL."""
    with open(payload_file) as fh:
        payload = json.load(fh)
    show = json.dumps(payload["show"]).encode()
    create = json.dumps(payload["create"]).encode()

    async def get_stream(request: web.Request) -> web.Response:
        return web.Response(body=show, content_type="application/json")

    async def post_stream(request: web.Request) -> web.Response:
        await request.json()
        return web.Response(body=create, status=201, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/api/v1/streams/{id}", get_stream)
        app.router.add_post("/api/v1/streams", post_stream)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def _write_json(path: str, data: object) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh)


async def start(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    return proc, line.decode().strip()


async def load(
    base_url: str,
    method: str,
    path: str,
    headers: dict[str, str],
    duration: float,
    concurrency: int,
) -> float:
    """Requests per second over ``duration`` with ``concurrency`` clients."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url, connector=connector, headers=headers) as http:
        count = 0
        body = BODY if method == "POST" else None

        async def worker(deadline: float) -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                async with http.request(method, path, json=body) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        raise RuntimeError(f"{method} {path} answered {resp.status}")
                count += 1

        # Warm up connections, then measure.
        await asyncio.gather(*(worker(time.perf_counter() + 0.3) for _ in range(concurrency)))
        count = 0
        started = time.perf_counter()
        deadline = started + duration
        await asyncio.gather(*(worker(deadline) for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


async def run(duration: float, concurrency: int, payload_file: str) -> None:
    emu, emu_url = await start(
        "-m",
        "multibackend_streamsource.emulator",
        "--port",
        "0",
        "--localhost-exempt",
        "--user",
        f"{EMAIL}:{PASSWORD}:editor",
    )
    bare = None
    try:
        async with aiohttp.ClientSession(emu_url) as http:
            login = {"user": {"email": EMAIL, "password": PASSWORD}}
            async with http.post("/api/v1/login", json=login) as resp:
                token = (await resp.json())["token"]
            auth = {"Authorization": f"Bearer {token}"}
            async with http.post("/api/v1/streams", json=BODY, headers=auth) as resp:
                created: dict[str, Any] = await resp.json()
            sid = created["stream"]["id"]
            async with http.get(f"/api/v1/streams/{sid}", headers=auth) as resp:
                shown: dict[str, Any] = await resp.json()
        await asyncio.to_thread(_write_json, payload_file, {"show": shown, "create": created})
        bare, bare_url = await start(__file__, "--serve-bare", payload_file)
        for name, method, path in (
            ("emulator_get_stream", "GET", f"/api/v1/streams/{sid}"),
            ("emulator_create_stream", "POST", "/api/v1/streams"),
        ):
            baseline = await load(bare_url, method, path, auth, duration, concurrency)
            value = await load(emu_url, method, path, auth, duration, concurrency)
            print(
                json.dumps(
                    {
                        "benchmark": name,
                        "metric": f"throughput_{concurrency}_clients",
                        "value": round(value, 1),
                        "unit": "req/s",
                        "baseline": round(baseline, 1),
                        "ratio": round(value / baseline, 3),
                    }
                ),
                flush=True,
            )
    finally:
        for proc in (emu, bare):
            if proc is not None and proc.returncode is None:
                proc.terminate()
                await proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve-bare", metavar="PAYLOAD_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.duration, args.concurrency, f"{tmp}/payload.json"))


if __name__ == "__main__":
    main()
