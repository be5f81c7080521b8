"""The embedded default's broker: kombu's filesystem transport, with two changes.

- Publishing is atomic. kombu writes a message file under its final name and
  fills it afterwards; a worker polling the folder could take the file while it
  was still empty, fail to decode it and lose the message (5 in 3,000 with a
  busy reader, measured). Here a message is written under a name no reader
  takes, then renamed into place, which is atomic within one folder.
- A message a worker takes goes to the home's `processed` folder, not the
  system's temp folder (readable by any local user, and never cleaned if the
  worker died before reading it), and is removed once read.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

# The reader takes files whose name after the first dot is "<queue>.msg"
# exactly, so "<queue>.msg.part" is never taken half-written.
PARTIAL = ".part"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # Same name as kombu's (the reader sorts on the leading milliseconds).
        name = f"{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + PARTIAL
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f"cannot add a message to {self.data_folder_out}: {exc}") from exc

    def _get(self, queue: str) -> Any:
        # kombu moves a message it takes to the system's temp folder (with
        # store_processed off): readable by any local user there, and left behind
        # for good if the worker dies before reading it. It is taken into the
        # home's own `processed` folder instead, and removed once read.
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            taken = os.path.join(self.processed_folder, name)
            try:
                os.replace(os.path.join(self.data_folder_in, name), taken)
            except OSError:
                continue  # another worker took it first
            try:
                with open(taken, "rb") as handle:
                    payload = handle.read()
                os.unlink(taken)
            except OSError as exc:
                raise ChannelError(
                    f"cannot read a message in {self.processed_folder}: {exc}"
                ) from exc
            return loads(bytes_to_str(payload))
        raise Empty()


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:{Transport.__name__}"


def drop_stale_partials(folder: Path, older_than: float = 3600) -> int:
    """Remove what publishers killed mid-write left behind; their batches are in the spool.

    Only old ones: a publisher may be writing one right now.
    """
    dropped = 0
    limit = time.time() - older_than
    for path in folder.glob(f"*{PARTIAL}"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < limit:
                path.unlink()
                dropped += 1
    return dropped
