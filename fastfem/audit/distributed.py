"""The processes of one audit: a checked start that fails fast, and checkpoints they pass together.

**Start** (`start_processes`). Before JAX's multi-controller runtime starts, the processes meet
at the coordinator's address in a handshake of their own: process 0 listens on the coordinator's
port, every other process connects and says who it is (process id, process count, host, pid).
Process 0 answers everyone at once: ``ok`` when every id ``1 .. N-1`` has arrived exactly once,
or an error as soon as an id is claimed twice (process 0's own id included: a second process 0
finds the port taken and says hello instead) or a process count differs, or when ``timeout``
seconds pass with ids missing. The error names the coordinator and the ids seen; every process
raises it as `ProcessGroupError`. Only after an ``ok`` does ``jax.distributed.initialize`` run
(process 0's listener is closed first; JAX's coordination service binds the same port), with its
initialisation and heartbeat timeouts set from the same ``timeout``. Without this handshake a
missing peer or a duplicated id reaches JAX's runtime, which aborts every process (after five
minutes, by default) with a C++ error naming neither.

With ``distributed=True`` (cluster auto-detection) the coordinator is only known to JAX, so there
is no handshake; the timeouts still apply.

**Checkpoints** (`ProcessGroup.checkpoint`). Around each stage of the audit every process posts
``ok`` or its own error in the coordination service's key-value store (``jax._src.distributed``'s
client: JAX has no public accessor for it) and, on success, waits until every process has posted:
a peer's error is raised at once as `ProcessGroupError` naming the process and its message, so no
process waits forever on a peer that has failed. A peer that dies outright is detected by JAX's
heartbeat (the same ``timeout``). One process: a checkpoint just runs its body.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax

#: Seconds a missing peer, a duplicated id or an unreachable coordinator may take to be reported.
DEFAULT_TIMEOUT = 60.0
PROTOCOL = "fastfem-audit-handshake/1"


class ProcessGroupError(ConnectionError):
    """The processes of a multi-process audit cannot start or go on together."""


@dataclass
class ProcessGroup:
    """This process's place among the audit's processes (one process: index 0 of 1)."""

    index: int = 0
    count: int = 1
    coordinator: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    _rounds: dict[str, itertools.count] = field(default_factory=dict, repr=False)
    _keys: dict[str, str] = field(default_factory=dict, repr=False)
    _last_poll: float = field(default=-math.inf, repr=False)

    @contextlib.contextmanager
    def checkpoint(self, name: str) -> Iterator[None]:
        """Run the body; then every process passes ``name`` together (module docstring).

        The body's own exception is posted for the peers and re-raised unchanged, after the
        peers have posted too (at most `timeout` seconds: they stop at their next
        `raise_if_a_peer_failed`); a peer's error is raised as `ProcessGroupError`.
        """
        if self.count == 1:
            yield
            return
        round_ = next(self._rounds.setdefault(name, itertools.count()))
        key = self._keys[name] = f"fastfem/audit/{name}/{round_}"
        client = _client()
        try:
            yield
        except BaseException as err:
            client.key_value_set(f"{key}/{self.index}", f"error:{type(err).__name__}: {err}")
            with contextlib.suppress(ProcessGroupError):
                self._wait(client, key, name, time.monotonic() + self.timeout, stop_on_error=False)
            raise
        client.key_value_set(f"{key}/{self.index}", "ok")
        self._wait(client, key, name)

    def raise_if_a_peer_failed(self, name: str, every: float = 1.0) -> None:
        """Inside checkpoint ``name``: raise `ProcessGroupError` if another process has posted
        an error there (asks the coordinator at most once per ``every`` seconds)."""
        if self.count == 1 or name not in self._keys:
            return
        now = time.monotonic()
        if now - self._last_poll < every:
            return
        self._last_poll = now
        self._raise_failure(self._posted(_client(), self._keys[name]), name)

    def _posted(self, client: Any, key: str) -> dict[int, str]:
        return {int(k.rsplit("/", 1)[1]): v for k, v in client.key_value_dir_get(key + "/")}

    def _raise_failure(self, posted: Mapping[int, str], name: str) -> None:
        failed = sorted(i for i, v in posted.items() if v.startswith("error:") and i != self.index)
        if failed:
            i = failed[0]
            raise ProcessGroupError(
                f"process {i} of {self.count} failed at '{name}' "
                f"(coordinator {self.coordinator}): {posted[i][len('error:') :]}"
            )

    def _wait(
        self,
        client: Any,
        key: str,
        name: str,
        deadline: float = math.inf,
        stop_on_error: bool = True,
    ) -> None:
        """Until every process has posted at ``key`` (or ``deadline``: ProcessGroupError)."""
        while True:
            posted = self._posted(client, key)
            if stop_on_error:
                self._raise_failure(posted, name)
            if len(posted) == self.count:
                return
            if time.monotonic() >= deadline:
                missing = sorted(set(range(self.count)) - set(posted))
                raise ProcessGroupError(f"processes {missing} did not reach '{name}'")
            time.sleep(0.05)


def _client() -> Any:
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:
        raise ProcessGroupError("JAX's distributed runtime is not initialised")
    return client


def check_timeout(value: Any) -> float:
    """A timeout in seconds: a finite number > 0 (a ValueError naming the value otherwise)."""
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"the process timeout must be a number of seconds; got {value!r}"
        ) from None
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"the process timeout must be a positive number of seconds; got {value!r}")
    return timeout


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) -> (host, port); a ValueError naming it otherwise."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator address must be HOST:PORT; got {address!r}")
    return host.strip("[]"), int(port)


def start_processes(distributed: bool | Mapping[str, Any]) -> ProcessGroup:
    """Start (or join) the audit's processes: ``False`` -> this process alone (or the processes
    of a JAX runtime already started); ``True`` -> ``jax.distributed.initialize()`` from the
    cluster's environment; a mapping -> its keyword arguments (``coordinator_address``,
    ``num_processes``, ``process_id``, and optionally ``initialization_timeout``, the
    handshake's timeout, default `DEFAULT_TIMEOUT`). CPU collectives use gloo."""
    kwargs = dict(distributed) if isinstance(distributed, Mapping) else {}
    timeout = check_timeout(kwargs.pop("initialization_timeout", DEFAULT_TIMEOUT))
    if distributed and not jax.distributed.is_initialized():
        address, count, index = (
            kwargs.get(k) for k in ("coordinator_address", "num_processes", "process_id")
        )
        if address is not None and count is not None and index is not None:
            count, index = check_ids(count, index)
            if count > 1:
                handshake(address, count, index, timeout)
        seconds = max(1, math.ceil(timeout))
        kwargs.setdefault("heartbeat_timeout_seconds", max(seconds, 10))
        kwargs.setdefault("shutdown_timeout_seconds", max(seconds, 10))
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(initialization_timeout=seconds, **kwargs)
    if not jax.distributed.is_initialized():
        return ProcessGroup(timeout=timeout)
    from jax._src import distributed as state

    return ProcessGroup(
        jax.process_index(), jax.process_count(), state.global_state.coordinator_address, timeout
    )


def check_ids(count: Any, index: Any) -> tuple[int, int]:
    """``(num_processes, process_id)`` as ints with ``0 <= process_id < num_processes``."""
    ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (count, index))
    if not ok or count < 1 or not 0 <= index < count:
        raise ValueError(
            f"process_id must be in [0, num_processes); got process_id={index!r}, "
            f"num_processes={count!r}"
        )
    return count, index


# ---------------------------------------------------------------------------------- handshake


def _hello(count: int, index: int) -> dict[str, Any]:
    return {
        "protocol": PROTOCOL,
        "process_id": index,
        "num_processes": count,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def _who(hello: Mapping[str, Any]) -> str:
    return f"host {hello.get('host')} pid {hello.get('pid')}"


def _send(conn: socket.socket, message: Mapping[str, Any]) -> None:
    conn.sendall((json.dumps(message) + "\n").encode())


def _receive(conn: socket.socket, deadline: float) -> dict[str, Any] | None:
    """One JSON line from ``conn`` before ``deadline`` (None: closed, timed out or not JSON)."""
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        conn.settimeout(remaining)
        try:
            chunk = conn.recv(4096)
        except OSError:
            return None
        if not chunk or len(data) > 65536:
            return None
        data += chunk
    try:
        message = json.loads(data)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def handshake(address: str, count: int, index: int, timeout: float) -> None:
    """Meet the other processes at ``address`` before JAX starts (module docstring); raises
    `ProcessGroupError` naming the coordinator and the ids seen."""
    host, port = split_address(address)
    if index == 0:
        try:
            server = _listen(port)
        except OSError as err:
            _join(host, port, _hello(count, index), timeout, taken=err)
            return
        with server:
            _gather(server, address, count, _hello(count, index), timeout)
    else:
        _join(host, port, _hello(count, index), timeout)


def _listen(port: int) -> socket.socket:
    if socket.has_dualstack_ipv6():
        return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
    return socket.create_server(("", port))


def _gather(
    server: socket.socket, address: str, count: int, mine: dict[str, Any], timeout: float
) -> None:
    """Process 0: collect every peer's hello, then answer all (module docstring)."""
    deadline = time.monotonic() + timeout
    seen: list[tuple[dict[str, Any], socket.socket]] = []
    error = None
    try:
        while error is None and len(seen) < count - 1:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                error = _missing(address, count, mine, seen, timeout)
                break
            server.settimeout(min(remaining, 0.5))
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            hello = _receive(conn, min(deadline, time.monotonic() + 5))
            if hello is None or hello.get("protocol") != PROTOCOL:
                conn.close()  # not one of ours (a port scan, a stray client): ignored
                continue
            seen.append((hello, conn))
            error = _conflict(address, count, mine, seen)
        reply = {"ok": True} if error is None else {"error": error}
        for _, conn in seen:
            with contextlib.suppress(OSError):
                _send(conn, reply)
                _receive(conn, time.monotonic() + 2)  # the peer closes first
    finally:
        for _, conn in seen:
            conn.close()
    if error is not None:
        raise ProcessGroupError(error)


def _ids_seen(mine: Mapping[str, Any], seen: list[tuple[dict[str, Any], socket.socket]]) -> list:
    return sorted([mine["process_id"], *(h.get("process_id") for h, _ in seen)], key=str)


def _prefix(address: str, count: int) -> str:
    return f"multi-process audit failed to start (coordinator {address}, {count} processes)"


def _missing(address: str, count: int, mine: dict, seen: list, timeout: float) -> str:
    ids = _ids_seen(mine, seen)
    missing = sorted(set(range(count)) - set(ids))
    return (
        f"{_prefix(address, count)}: within {timeout:g} s only process ids {ids} arrived; "
        f"missing {missing}"
    )


def _conflict(address: str, count: int, mine: dict, seen: list) -> str | None:
    """The error of the newest hello in ``seen``, if any: a process count that differs, an id
    out of range, or an id claimed twice."""
    hello = seen[-1][0]
    pid = hello.get("process_id")
    ids = _ids_seen(mine, seen)
    if hello.get("num_processes") != count:
        return (
            f"{_prefix(address, count)}: process {pid} ({_who(hello)}) was started with "
            f"num_processes={hello.get('num_processes')}; ids seen {ids}"
        )
    claims = [mine] + [h for h, _ in seen[:-1]]
    first = next((h for h in claims if h.get("process_id") == pid), None)
    if first is not None:
        return (
            f"{_prefix(address, count)}: process id {pid} claimed twice ({_who(first)} and "
            f"{_who(hello)}); ids seen {ids}"
        )
    return None


def _join(
    host: str, port: int, mine: dict[str, Any], timeout: float, taken: OSError | None = None
) -> None:
    """A process other than 0 (or a second process 0 that found the port ``taken``): say hello
    to the coordinator, wait for its answer."""
    address = f"{host}:{port}"
    count = mine["num_processes"]
    deadline = time.monotonic() + timeout
    conn = None
    while conn is None:
        try:
            conn = socket.create_connection((host, port), timeout=2)
        except OSError as err:
            if taken is not None or time.monotonic() >= deadline:
                why = f"cannot listen on its port ({taken})" if taken else f"unreachable ({err})"
                raise ProcessGroupError(
                    f"{_prefix(address, count)}: process {mine['process_id']}: the coordinator "
                    f"is {why} within {timeout:g} s"
                ) from None
            time.sleep(0.2)
    with conn:
        _send(conn, mine)
        answer = _receive(conn, time.monotonic() + timeout + 5)
    if answer is None:
        if taken is not None:
            raise ProcessGroupError(
                f"{_prefix(address, count)}: process 0 cannot listen on the coordinator's port "
                f"({taken}) and what listens there is not an audit's coordinator"
            )
        raise ProcessGroupError(
            f"{_prefix(address, count)}: process {mine['process_id']}: the coordinator gave no "
            "handshake answer (its processes have already started together: is this process "
            "id used twice, or the coordinator's address that of another run?)"
        )
    if "error" in answer:
        raise ProcessGroupError(str(answer["error"]))
