"""The JetStream bus: the only package that imports `nats`.

Connect, provision the stream and buckets, publish events (deduplicated, retried), consume them
through durable pull consumers (validated, bounded, acked after the handler), and KV buckets
with a level-based watch. Deliberately not here: any knowledge of what the events mean.
"""

from shared.bus.bus import Bus
from shared.bus.connection import BusError, Connection, connect_options
from shared.bus.consuming import Consumer
from shared.bus.durables import ConsumerSettings, Delivery, Handler, nak_delay
from shared.bus.kv import Bucket, Deleted, KvEntry, KvUpdate, Put, RevisionMismatch, Snapshot
from shared.bus.provisioning import stream_config
from shared.bus.publishing import MSG_ID, Published, PublishError
from shared.bus.settings import NatsSettings

__all__ = [
    "MSG_ID",
    "Bucket",
    "Bus",
    "BusError",
    "Connection",
    "Consumer",
    "ConsumerSettings",
    "Deleted",
    "Delivery",
    "Handler",
    "KvEntry",
    "KvUpdate",
    "NatsSettings",
    "PublishError",
    "Published",
    "Put",
    "RevisionMismatch",
    "Snapshot",
    "connect_options",
    "nak_delay",
    "stream_config",
]
