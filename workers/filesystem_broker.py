"""kombu's filesystem transport with atomic message files.

kombu creates a message file and then writes it, so a worker polling the folder can move
and read it in between, get an empty or half-written payload and die on the JSON
("Unrecoverable error"). Writing under a name the reader skips and renaming it into
place makes a message appear whole or not at all.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        final = os.path.join(self.data_folder_out, f"{int(filesystem.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg")
        partial = os.path.join(self.data_folder_out, f".partial-{uuid.uuid4()}")
        try:
            with open(partial, "wb") as f:
                f.write(dumps(payload).encode())
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
