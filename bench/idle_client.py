#!/usr/bin/env python3
"""Holds many client connections open against one HTTP/1.1 server, for bench/idle.sh.

  idle_client.py PORT N idle      N keep-alive connections, one request each, then held
  idle_client.py PORT N slowloris N connections sending a request's headers a byte a second
  idle_client.py PORT N churn     N connections opened at once, one request each, closed

It prints "ready" once every connection is in the state asked for (for idle: each has
had its whole response), then holds them until stdin closes or says anything.
"""
import asyncio
import sys

REQUEST = b"GET /1k HTTP/1.1\r\nHost: bench\r\n\r\n"


async def one_request(reader, writer):
    writer.write(REQUEST)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)


async def connect(port):
    for attempt in range(50):
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            # The listen backlog overflowed: a moment later it has room again.
            await asyncio.sleep(0.02 * (attempt + 1))
    raise RuntimeError("could not connect")


async def idle(port, held):
    reader, writer = await connect(port)
    await one_request(reader, writer)
    held.append(writer)


async def slowloris(port, held, stop):
    reader, writer = await connect(port)
    held.append(writer)
    writer.write(b"GET /1k HTTP/1.1\r\nHost: bench\r\nX-Slow: ")
    while not stop.is_set():
        await asyncio.sleep(1)
        try:
            writer.write(b"a")
            await writer.drain()
        except OSError:
            return


async def churn(port):
    reader, writer = await connect(port)
    await one_request(reader, writer)
    writer.close()


async def main():
    port, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    held, stop = [], asyncio.Event()
    batch = 500  # opened in batches so the listen backlog is not the test
    if mode == "churn":
        for i in range(0, n, batch):
            await asyncio.gather(*(churn(port) for _ in range(min(batch, n - i))))
        print("ready", flush=True)
        return
    tasks = []
    for i in range(0, n, batch):
        if mode == "idle":
            await asyncio.gather(*(idle(port, held) for _ in range(min(batch, n - i))))
        else:
            tasks += [asyncio.create_task(slowloris(port, held, stop)) for _ in range(min(batch, n - i))]
            await asyncio.sleep(0.05)
    if mode == "slowloris":
        await asyncio.sleep(2)  # every connection has sent a few bytes
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    stop.set()
    for w in held:
        w.close()
    for t in tasks:
        t.cancel()


asyncio.run(main())
