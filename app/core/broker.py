"""The embedded broker: kombu's filesystem transport with atomic message files.

kombu's producer creates the message file and then writes it, while a
consumer may move and read it in between and find it empty (seen here as a
JSONDecodeError in the worker and a lost message). Writing to a hidden name
and renaming into place makes each message appear whole or not at all.
"""

import os
import uuid
from time import monotonic

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


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
