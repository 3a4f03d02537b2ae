"""A run's tool channel: one more pipe pair between the host and the walled process.

Every run's process gets it (it is made with the process, before anyone knows whether the
run will call tools). A run with a tool server serves it from a host thread; a run without
one closes the host's ends at once, so the program finds the channel shut (end of file,
broken pipe) and nothing in the host listens. The sandbox knows nothing of tools: the
server (pipelines.agent's Dispatcher) is whatever object offers `client_source()` and
`serve(read_fd, write_fd)`, and decides every byte of every reply.

Only bytes cross: the two pipes are the program's whole reach into the host through this
channel, and the host end is a thread that reads frames and writes replies.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Protocol

# How long a finished run waits for its server thread to notice the end (it reads end of
# file as soon as the process is gone; a tool still running is abandoned after this).
FINISH_GRACE = 2.0


class ToolServer(Protocol):
    def client_source(self) -> str:
        """Python source run in the program's process before the program (its `tools`)."""
        ...

    def serve(self, read_fd: int, write_fd: int) -> None:
        """Answer requests read from `read_fd` on `write_fd` until end of file."""
        ...


class ToolPipes:
    """The channel's four ends: the child's (request write, reply read), passed to the
    walled process and closed here once it holds them, and the host's (request read,
    reply write), owned by the serving thread once a run starts it."""

    def __init__(self) -> None:
        self.request_r, self.request_w = os.pipe2(os.O_CLOEXEC)
        self.reply_r, self.reply_w = os.pipe2(os.O_CLOEXEC)
        self._thread: threading.Thread | None = None

    @property
    def child_ends(self) -> tuple[int, int]:
        return self.request_w, self.reply_r

    def close_child_ends(self) -> None:
        """After the process has its copies: the program's end of file must mean the
        program's end, so the host keeps none of the child's ends."""
        for name in ("request_w", "reply_r"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def start(self, server: ToolServer | None) -> None:
        """Serve the run's channel from a thread, or shut it now when there is no server."""
        if server is None:
            self.close()
            return
        request_r, reply_w = self.request_r, self.reply_w
        self.request_r = self.reply_w = -1  # the thread's now: it closes them when done

        def pump() -> None:
            try:
                server.serve(request_r, reply_w)
            finally:
                os.close(request_r)
                os.close(reply_w)

        self._thread = threading.Thread(target=pump, name="llamapipe-sandbox-tools", daemon=True)
        self._thread.start()

    def finish(self, grace: float = FINISH_GRACE) -> bool:
        """After the process has ended: wait for the server to see end of file. False when
        it is still busy (a tool overran): it is left to finish and close its ends."""
        if self._thread is None:
            return True
        self._thread.join(grace)
        return not self._thread.is_alive()

    def close(self) -> None:
        """Close every end still held here (not those a serving thread owns)."""
        self.close_child_ends()
        for name in ("request_r", "reply_w"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)
