"""The embedded broker: kombu's filesystem transport with atomic message files.

kombu's producer creates the message file and then writes it, while a
consumer may move and read it in between and find it empty (seen here as a
JSONDecodeError in the worker and a lost message). Writing to a hidden name
and renaming into place makes each message appear whole or not at all.

A worker told to stop waits in kombu's drain_events until its 2 s timeout
before Celery looks at the stop flag; ours returns at the next poll instead.
"""

import os
import threading
import uuid
from time import monotonic, sleep

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

from app.core import guards

guards.kombu_filesystem_put()  # Channel._put below overrides kombu's private method

SCHEME = "fsatomic"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.tmp")
        with open(partial, "wb") as f:
            f.write(str_to_bytes(dumps(payload)))
        os.replace(partial, final)


# Set by the worker when it starts shutting down (control.install).
stopping = threading.Event()


class Transport(filesystem.Transport):
    Channel = Channel

    def drain_events(self, connection, timeout=None):
        """kombu's loop, but a stopping worker's wait ends at the next poll."""
        start, get = monotonic(), self.cycle.get
        while True:
            try:
                return get(self._deliver, timeout=timeout)
            except filesystem.Empty:
                if stopping.is_set() or (timeout is not None and monotonic() - start >= timeout):
                    raise TimeoutError() from None  # socket.timeout, what Celery expects
                sleep(min(self.polling_interval or 0.1, timeout or 0.1))


TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
