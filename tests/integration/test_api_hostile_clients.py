"""Clients that try to hold the API hostage, over raw sockets to a real server on 127.0.0.1.

Keyless clients with bad or huge bodies, clients that send their headers or body a byte at a time,
bodies over the cap on a keep-alive connection. What must hold: 401 before any body is read, slow
clients cut off (and counted), a 413 that arrives whole on a connection that goes on serving, never
closed with unread data (that resets it, and a reset kills a `kubectl port-forward`).
"""

from __future__ import annotations

import socket

import pytest

from tests.integration.test_api_contract import assert_error

# Short deadlines, so a slow client is cut off quickly; each socket's own timeout bounds every wait.
DEADLINE_SECONDS = 2
SOCKET_TIMEOUT_SECONDS = 30


@pytest.fixture(scope="module")
def guarded(start_api_server):
    return start_api_server(header_timeout_seconds=DEADLINE_SECONDS, body_timeout_seconds=DEADLINE_SECONDS)


class Connection:
    """One HTTP/1.1 connection, spoken by hand."""

    def __init__(self, client):
        self.sock = socket.create_connection((client.base_url.host, client.base_url.port), timeout=SOCKET_TIMEOUT_SECONDS)
        self.buffer = b""
        self.key = client.headers["Authorization"].removeprefix("Bearer ")

    def request_head(self, method: str, path: str, *, key: str | None = None, **headers: str) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        if key is not None:
            lines.append(f"Authorization: Bearer {key}")
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next whole response: (status, headers, body); fails if the connection ends first."""
        while b"\r\n\r\n" not in self.buffer:
            self.fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self.fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def closed_by_server(self) -> bool:
        """Waits until the server ends the connection (True), or data comes instead (False)."""
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    def fill(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"the server closed the connection mid-response; got so far: {self.buffer[:300]!r}"
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def connect(guarded):
    opened: list[Connection] = []

    def open_one() -> Connection:
        opened.append(Connection(guarded))
        return opened[-1]

    yield open_one
    for connection in opened:
        connection.close()


def slow_clients_counted(client, phase: str) -> float:
    for line in client.anonymous.get("/metrics").text.splitlines():
        if line.startswith(f'sandbox_slow_clients_total{{phase="{phase}"}}'):
            return float(line.split()[-1])
    return 0.0


# --- authentication comes first -----------------------------------------------------------------

@pytest.mark.parametrize("key", [None, "sbx_not-a-real-key"])
@pytest.mark.parametrize("body", [b"{not json", b'{"language": "bash"}', b"\xff\xfe" * 1000])
def test_a_bad_body_without_a_valid_key_is_401(guarded, key, body):
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    response = guarded.anonymous.post("/api/sandbox/execute", content=body, headers=headers)
    assert_error(response, 401, "API key")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_huge_declared_body_without_a_key_is_401_before_any_of_it_is_sent(guarded, connect):
    before = slow_clients_counted(guarded, "body")
    connection = connect()
    connection.send(connection.request_head("POST", "/api/sandbox/execute", Content_Length=str(10**12),
                                            Content_Type="application/json"))
    status, _, body = connection.response()
    assert status == 401 and b"missing API key" in body
    # The body it announced never comes: the connection is closed at the body deadline.
    assert connection.closed_by_server()
    assert slow_clients_counted(guarded, "body") == before + 1


def test_a_keyless_client_waiting_for_100_continue_gets_401_and_is_never_asked_for_its_body(connect):
    connection = connect()
    connection.send(connection.request_head("POST", "/api/sandbox/execute", Content_Length="100000",
                                            Expect="100-continue", Content_Type="application/json"))
    status, _, _ = connection.response()
    assert status == 401
    assert not connection.buffer, "nothing after the answer: no 100 Continue"
    # A client may still send the body (RFC 9110 15.2.1): it is dropped and the connection goes on.
    connection.send(b"x" * 100000 + connection.request_head("GET", "/healthz"))
    assert connection.response()[0] == 200


def test_a_client_with_a_key_waiting_for_100_continue_is_asked_for_its_body(connect):
    connection = connect()
    body = b'{"language": "bash", "code": "echo continued"}'
    connection.send(connection.request_head("POST", "/api/sandbox/execute", key=connection.key, Expect="100-continue",
                                            Content_Type="application/json", Content_Length=str(len(body))))
    while b"\r\n\r\n" not in connection.buffer:
        connection.fill()
    assert connection.buffer.startswith(b"HTTP/1.1 100 ")
    connection.buffer = connection.buffer.partition(b"\r\n\r\n")[2]
    connection.send(body)
    status, _, answer = connection.response()
    assert status == 200 and b"continued" in answer, answer


def test_an_oversized_body_without_a_key_is_401_not_413(guarded):
    response = guarded.anonymous.post("/api/sandbox/execute", content=b"x" * (1 << 20),
                                      headers={"Content-Type": "application/json"})
    assert_error(response, 401, "missing API key")


# --- a body over the cap: 413, and the connection goes on --------------------------------------

def test_413_arrives_whole_and_the_keep_alive_connection_serves_the_next_request(connect):
    connection = connect()
    body = b'{"language": "bash", "code": "echo", "input_data": "' + b"x" * (2 << 20) + b'"}'
    connection.send(connection.request_head("POST", "/api/sandbox/execute", key=connection.key,
                                            Content_Type="application/json", Content_Length=str(len(body))) + body)
    status, headers, answer = connection.response()
    assert status == 413 and b"larger than" in answer, answer
    assert "connection" not in headers
    connection.send(connection.request_head("GET", "/api/sandbox/languages", key=connection.key))
    status, _, answer = connection.response()
    assert status == 200 and b"python" in answer


def test_chunked_413_keeps_the_connection_too(connect):
    connection = connect()
    connection.send(connection.request_head("POST", "/api/sandbox/execute", key=connection.key,
                                            Content_Type="application/json", Transfer_Encoding="chunked"))
    chunk = b"x" * 65536
    for _ in range(40):  # 2.5 MiB in all: over the 2 MiB cap, within the 4 MiB read and dropped
        connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    connection.send(b"0\r\n\r\n")
    status, _, answer = connection.response()
    assert status == 413, answer
    connection.send(connection.request_head("GET", "/healthz"))
    assert connection.response()[0] == 200


def test_a_body_far_over_what_is_read_before_answering_is_dropped_and_the_connection_goes_on(connect):
    # Closing with unread data would reset the connection (and kill a kubectl port-forward).
    connection = connect()
    size = 64 << 20
    connection.send(connection.request_head("POST", "/api/sandbox/execute", key=connection.key,
                                            Content_Type="application/json", Content_Length=str(size)))
    status, headers, _ = connection.response()
    assert status == 413 and "connection" not in headers
    chunk = b"x" * (1 << 20)
    for _ in range(size // len(chunk)):
        connection.send(chunk)
    connection.send(connection.request_head("GET", "/healthz"))
    assert connection.response()[0] == 200


def test_the_rest_of_a_refused_body_sent_too_slowly_is_cut_off(guarded, connect):
    before = slow_clients_counted(guarded, "body")
    connection = connect()
    connection.send(connection.request_head("POST", "/api/sandbox/execute", key=connection.key,
                                            Content_Type="application/json", Content_Length=str(64 << 20)) + b"{")
    assert connection.response()[0] == 413
    assert connection.closed_by_server()
    assert slow_clients_counted(guarded, "body") == before + 1


# --- slow clients are cut off and counted -------------------------------------------------------

def test_a_client_that_connects_and_sends_nothing_is_cut_off(guarded, connect):
    before = slow_clients_counted(guarded, "headers")
    assert connect().closed_by_server()
    assert slow_clients_counted(guarded, "headers") == before + 1


def test_a_client_sending_its_headers_a_byte_at_a_time_is_cut_off(guarded, connect):
    before = slow_clients_counted(guarded, "headers")
    connection = connect()
    connection.sock.settimeout(0.5)  # the pace of this client: one byte per half second at most
    head = connection.request_head("GET", "/healthz") * 100  # far more bytes than the deadline allows
    for byte in head:
        try:
            connection.send(bytes([byte]))
            if connection.sock.recv(1) == b"":
                break
        except TimeoutError:
            continue  # nothing from the server yet: send the next byte
        except (BrokenPipeError, ConnectionResetError):
            break
    else:
        pytest.fail("the server kept a byte-a-second client for its whole request head")
    assert slow_clients_counted(guarded, "headers") == before + 1


def test_a_client_sending_its_body_too_slowly_gets_408(guarded, connect):
    before = slow_clients_counted(guarded, "body")
    connection = connect()
    connection.send(connection.request_head("POST", "/api/sandbox/execute", key=connection.key,
                                            Content_Type="application/json", Content_Length="100") + b'{"lang')
    status, headers, body = connection.response()
    assert status == 408 and b"did not arrive" in body
    assert headers["connection"] == "close"
    assert slow_clients_counted(guarded, "body") == before + 1


def test_a_keyless_slow_body_is_cut_off_as_well(guarded, connect):
    before = slow_clients_counted(guarded, "body")
    connection = connect()
    connection.send(connection.request_head("POST", "/api/sandbox/execute", Content_Length="100") + b"{")
    status, headers, _ = connection.response()
    assert (status, headers["connection"]) == (401, "close")
    assert slow_clients_counted(guarded, "body") == before + 1


def test_the_server_serves_others_while_slow_clients_hang_on(guarded, connect):
    idle = [connect() for _ in range(50)]
    for connection in idle:
        connection.send(b"GET /heal")
    assert guarded.execute(language="bash", code="echo served")["stdout"] == "served\n"
    assert all(connection.closed_by_server() for connection in idle)
