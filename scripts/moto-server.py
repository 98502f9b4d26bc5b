"""A DynamoDB-compatible server for tests: moto's server mode on loopback.

Usage: python3 scripts/moto-server.py [PORT]   (0 or nothing: a free port)

Prints "listening on 127.0.0.1:PORT" once it answers, and exits when the
process that started it is gone, so a test run never leaves it behind.
Requires `pip install 'moto[server]'`.
"""
import os
import sys
import time

from moto.server import ThreadedMotoServer

port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
parent = os.getppid()
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"listening on {host}:{port}", flush=True)
while os.getppid() == parent:
    time.sleep(0.5)
server.stop()
