"""A delaying TCP proxy on loopback: a WAN's round trip in front of a benchmark nginx server.

Every chunk read in either direction is written on ``delay`` seconds later (half the round
trip: 0.02 s for a 40 ms RTT), in order, so each request and each answer pays the trip while
the bytes keep streaming at the server's rate. With ``request_delay``, each chunk from the
client (a request, on a keep-alive connection) waits that much longer: a fixed cost per
request, as a server that does slow work per range. Reads stop while a direction holds
:data:`QUEUE_CHUNKS` chunks not yet written (back-pressure, bounded memory).

Run as its own process (``python -m benchmarks._delayproxy LISTEN_PORT TARGET_PORT DELAY
[REQUEST_DELAY]``) so it never shares an interpreter with what it measures; it prints
``ready`` once listening and runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

READ_SIZE = 256 << 10
QUEUE_CHUNKS = 64


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

    async def receive() -> None:
        while chunk := await reader.read(READ_SIZE):
            await queue.put((loop.time() + delay, chunk))
        await queue.put((loop.time() + delay, b""))

    receiving = asyncio.ensure_future(receive())
    try:
        while True:
            due, chunk = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        receiving.cancel()
        writer.close()


def _server(target_port: int, delay: float, request_delay: float) -> object:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        pipes = {
            asyncio.ensure_future(_pipe(reader, up_writer, delay + request_delay)),
            asyncio.ensure_future(_pipe(up_reader, writer, delay)),
        }
        try:  # one side closed: the other is over too (a client that drops a range)
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            writer.close()
            up_writer.close()

    return handle


async def serve(listen_port: int, target_port: int, delay: float, request_delay: float) -> None:
    """Listen on 127.0.0.1:``listen_port`` until cancelled."""
    handle = _server(target_port, delay, request_delay)
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)  # type: ignore[arg-type]
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    """``LISTEN_PORT TARGET_PORT DELAY [REQUEST_DELAY]``."""
    listen, target, delay = int(argv[0]), int(argv[1]), float(argv[2])
    request_delay = float(argv[3]) if len(argv) > 3 else 0.0
    try:
        import uvloop

        uvloop.run(serve(listen, target, delay, request_delay))
    except ImportError:
        asyncio.run(serve(listen, target, delay, request_delay))


if __name__ == "__main__":
    main(sys.argv[1:])
