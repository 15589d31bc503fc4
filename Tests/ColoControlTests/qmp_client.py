#!/usr/bin/env python3
"""Drives colo-proxy's QMP control socket with QEMU's own Python client library (qemu.qmp).

Used by ColoControlTests' interop test: connect (greeting + capabilities negotiation), run
query-status, query-commands and filter-set-status, expect an ExecuteError for an unknown
command, then wait for one event. Prints one line per step; exits 0 when every step went as
expected, 1 otherwise.

Usage: qmp_client.py SOCKET_PATH
"""

import asyncio
import json
import sys

from qemu.qmp import ExecuteError, QMPClient


async def drive(path: str) -> int:
    qmp = QMPClient("colo-interop")
    await asyncio.wait_for(qmp.connect(path), 10)
    print("greeting:", json.dumps(qmp.greeting._asdict()["QMP"]["version"]["package"]))
    try:
        status = await qmp.execute("query-status")
        print("status:", json.dumps(status, sort_keys=True))

        commands = await qmp.execute("query-commands")
        print("commands:", ",".join(sorted(command["name"] for command in commands)))

        try:
            await qmp.execute("no-such-command")
            print("unknown: no error raised")
            return 1
        except ExecuteError as error:
            print("unknown:", error.error_class, str(error))

        result = await qmp.execute("filter-set-status", {"id": "mirror0", "status": "off"})
        print("filter-set-status:", json.dumps(result))

        event = await asyncio.wait_for(qmp.events.get(), 10)
        print("event:", event["event"], json.dumps(event.get("data"), sort_keys=True),
              "timestamp" in event)
    finally:
        await qmp.disconnect()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(drive(sys.argv[1])))
