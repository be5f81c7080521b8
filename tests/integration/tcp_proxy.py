"""A loopback TCP relay a test can cut, standing for a network, database or broker outage
(test_faults.py, test_redis_faults.py)."""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    """Relays every connection made to `port` to the target; `cut()` drops them all and
    refuses new ones (accepted, then closed at once) until `restore()`."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.listener.listen(64)
        self.up = True
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            for a, b, answers in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pipe, args=(a, b, answers), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while chunk := source.recv(65536):
                self.relay(chunk, source, sink, answers)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def relay(
        self, chunk: bytes, source: socket.socket, sink: socket.socket, answers: bool
    ) -> None:
        """Pass on what one side sent (`answers`: the target's side); a test's own proxy
        looks at what passes here."""
        sink.sendall(chunk)

    def cut(self) -> None:
        """Every open connection dropped, every new one refused at once."""
        self.up = False
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.sockets.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()
