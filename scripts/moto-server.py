"""A DynamoDB-compatible server for tests: moto's server mode on loopback.

Usage: python3 scripts/moto-server.py [PORT]   (0 or nothing: a free port)

Prints "listening on 127.0.0.1:PORT" once it answers, and exits when the
process that started it is gone, so a test run never leaves it behind.
Requires `pip install 'moto[server]'`.

Two adjustments make moto usable by several concurrent workers:
- requests are served one at a time: moto's DynamoDB backend is not safe
  for concurrent requests (a transaction copies the table while another
  request changes it);
- a transaction backs up each table it touches once, not once per action
  (moto copies the whole table per action, which grows with the table).
"""
import copy
import os
import sys
import threading
import time

import moto.dynamodb.models as dynamodb
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


class _CopyOncePerTransaction:
    """Stands in for the `copy` module inside moto's DynamoDB models."""

    def __init__(self):
        self.copies = None

    def deepcopy(self, value, memo=None):
        if self.copies is not None and isinstance(value, dynamodb.Table):
            if id(value) not in self.copies:
                self.copies[id(value)] = copy.deepcopy(value)
            return self.copies[id(value)]
        return copy.deepcopy(value, memo)

    def __getattr__(self, name):
        return getattr(copy, name)


_copier = _CopyOncePerTransaction()
dynamodb.copy = _copier
_transact = dynamodb.DynamoDBBackend.transact_write_items


def _transact_copying_once(self, transact_items):
    _copier.copies = {}
    try:
        return _transact(self, transact_items)
    finally:
        _copier.copies = None


dynamodb.DynamoDBBackend.transact_write_items = _transact_copying_once

port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
parent = os.getppid()
server = make_server("127.0.0.1", port, DomainDispatcherApplication(create_backend_app), threaded=False)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(f"listening on 127.0.0.1:{server.server_port}", flush=True)
while os.getppid() == parent:
    time.sleep(0.5)
server.shutdown()
