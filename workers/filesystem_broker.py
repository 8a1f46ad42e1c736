"""kombu's filesystem transport with files that appear whole.

kombu creates a message file and then writes it, so a worker polling the folder can move
and read it in between, get an empty or half-written payload and die on the JSON
("Unrecoverable error"). Writing under a name the reader skips and renaming it into
place makes a message appear whole or not at all. The exchange's binding table in the
control folder has the same race when the first process creates it; it is created
whole, as an empty table, before kombu's locked update adds the binding.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]  # kombu filesystem.Channel._put
        final = os.path.join(self.data_folder_out, f"{int(filesystem.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg")
        partial = os.path.join(self.data_folder_out, f".partial-{uuid.uuid4()}")
        try:
            with open(partial, "wb") as f:
                f.write(dumps(payload).encode())
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        table = self._exchange_file(exchange)
        if not table.exists():
            self.control_folder.mkdir(parents=True, exist_ok=True)
            partial = table.with_name(f".partial-{uuid.uuid4()}")
            partial.write_text("[]")
            try:
                os.link(partial, table)  # create-if-absent in one step: never an empty file
            except FileExistsError:
                pass
            finally:
                partial.unlink()
        super()._queue_bind(exchange, routing_key, pattern, queue)


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
