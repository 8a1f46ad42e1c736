"""The embedded broker hands over whole messages while a reader polls the folder."""

from __future__ import annotations

import threading
from pathlib import Path

from kombu import Connection

from workers.filesystem_broker import TRANSPORT

MESSAGES = 300
PAYLOAD = "x" * 65536  # big enough that a write takes a while


def test_a_polling_reader_never_sees_a_half_written_message(tmp_path: Path) -> None:
    options = {
        "data_folder_in": str(tmp_path),
        "data_folder_out": str(tmp_path),
        "control_folder": str(tmp_path / "control"),
        "store_processed": False,
    }
    received: list[dict] = []
    errors: list[BaseException] = []

    def read() -> None:
        with Connection("filesystem://", transport=TRANSPORT, transport_options=options) as conn:
            queue = conn.SimpleQueue("jobs")
            try:
                while len(received) < MESSAGES:
                    received.append(queue.get(timeout=10).payload)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

    with Connection("filesystem://", transport=TRANSPORT, transport_options=options) as conn:
        queue = conn.SimpleQueue("jobs")  # the queue exists before the reader polls it
        reader = threading.Thread(target=read)
        reader.start()
        for i in range(MESSAGES):
            queue.put({"i": i, "body": PAYLOAD})
    reader.join(timeout=60)
    assert not errors, errors[0]
    assert sorted(m["i"] for m in received) == list(range(MESSAGES))
    assert all(m["body"] == PAYLOAD for m in received)
    assert not list(tmp_path.glob(".partial-*"))
