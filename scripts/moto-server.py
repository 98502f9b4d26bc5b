"""A DynamoDB-compatible server for tests: moto's server mode on loopback.

Usage: python3 scripts/moto-server.py [PORT]   (0 or nothing: a free port)

Prints "listening on 127.0.0.1:PORT" once it answers, and exits when the
process that started it is gone, so a test run never leaves it behind.
Requires `pip install 'moto[server]'`.

Two adjustments make moto usable by several concurrent workers on a
table of many thousand items:
- requests are served one at a time: moto's DynamoDB backend is not safe
  for concurrent requests (a transaction backs up a table while another
  request changes it);
- a transaction backs up only the items it touches, and puts them back
  when it is cancelled (moto copies the whole table once per action, which
  takes longer with every item stored);
- a query on a table without secondary indexes reads its own partition
  (moto sorts every item of the table for each query).
"""
import copy
import os
import sys
import threading
import time

import moto.dynamodb.models as dynamodb
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


class _NoTableCopies:
    """Stands in for the `copy` module inside moto's DynamoDB models while a
    transaction runs: its table "backup" is the table itself, so moto's own
    rollback is a no-op and `_transact_backing_up_items` restores items."""

    active = False

    def deepcopy(self, value, memo=None):
        if self.active and isinstance(value, dynamodb.Table):
            return value
        return copy.deepcopy(value, memo)

    def __getattr__(self, name):
        return getattr(copy, name)


def _touched(backend, transact_items):
    """(table, hash key, range key, copy of the item or None) per action."""
    saved = []
    for action in transact_items:
        for _, op in action.items():
            table = backend.tables.get(op.get("TableName"))
            key = op.get("Key") or op.get("Item")
            if table is None or not key or table.hash_key_attr not in key:
                continue
            hash_key = DynamoType(key[table.hash_key_attr])
            range_key = None
            if table.range_key_attr is not None:
                if table.range_key_attr not in key:
                    continue
                range_key = DynamoType(key[table.range_key_attr])
            saved.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
    return saved


def _restore(saved):
    for table, hash_key, range_key, item in reversed(saved):
        if range_key is None:
            if item is None:
                table.items.pop(hash_key, None)
            else:
                table.items[hash_key] = item
        elif item is None:
            table.items[hash_key].pop(range_key, None)
        else:
            table.items[hash_key][range_key] = item


_copier = _NoTableCopies()
dynamodb.copy = _copier
_transact = dynamodb.DynamoDBBackend.transact_write_items


def _transact_backing_up_items(self, transact_items):
    saved = _touched(self, transact_items)
    _copier.active = True
    try:
        return _transact(self, transact_items)
    except BaseException:
        _restore(saved)
        raise
    finally:
        _copier.active = False


dynamodb.DynamoDBBackend.transact_write_items = _transact_backing_up_items

_all_items = dynamodb.Table.all_items
_query = dynamodb.Table.query
_queried_partition = None


def _all_items_of_queried_partition(self):
    """The queried partition's items in sort key order while a query runs
    on a table without indexes; every item otherwise (scans)."""
    if _queried_partition is None:
        return _all_items(self)
    partition = self.items.get(_queried_partition)
    if not partition:
        return []
    if self.range_key_attr:
        return sorted(partition.values(), key=lambda item: item.range_key)
    return [partition]


def _query_one_partition(self, hash_key, *args, **kwargs):
    global _queried_partition
    if self.all_indexes():
        return _query(self, hash_key, *args, **kwargs)
    _queried_partition = hash_key
    try:
        return _query(self, hash_key, *args, **kwargs)
    finally:
        _queried_partition = None


dynamodb.Table.all_items = _all_items_of_queried_partition
dynamodb.Table.query = _query_one_partition

port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
parent = os.getppid()
server = make_server("127.0.0.1", port, DomainDispatcherApplication(create_backend_app), threaded=False)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(f"listening on 127.0.0.1:{server.server_port}", flush=True)
while os.getppid() == parent:
    time.sleep(0.5)
server.shutdown()
