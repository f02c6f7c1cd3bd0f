#!/usr/bin/env python3
"""TLS clients for crates/iomux-cli/tests/tls.rs, on Python's ssl module
(OpenSSL): a client nobody here wrote. Loopback only; every wait is bounded.

    tls_client.py http PORT CA N [TLS1.2|TLS1.3]   N pipelined GETs in one write
    tls_client.py echo PORT CA BYTES                BYTES echoed back, then close_notify both ways
    tls_client.py subscribe PORT CA CHANNEL COUNT   SUBSCRIBE; print 'ready'; wait for COUNT messages
    tls_client.py resume PORT CA TLS1.2|TLS1.3      a second connection resumes the first's session
    tls_client.py truncated PORT CA                 half a record, then FIN: the server must close
"""
import socket
import ssl
import sys

TIMEOUT = 20


def context(ca, version=None):
    ctx = ssl.create_default_context(cafile=ca)
    if version == "TLS1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "TLS1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def connect(port, ctx, session=None, alpn=None):
    if alpn:
        ctx.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    return ctx.wrap_socket(raw, server_hostname="localhost", session=session)


def read_responses(s, n):
    """Read n keep-alive 'Hello, World!' responses (Content-Length framed)."""
    buf = b""
    got = 0
    while got < n:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit(f"EOF after {got} of {n} responses")
        buf += chunk
        while True:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                break
            head = buf[:head_end].decode()
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(buf) < head_end + 4 + length:
                break
            if not head.startswith("HTTP/1.1 200"):
                raise SystemExit(f"unexpected response: {head!r}")
            buf = buf[head_end + 4 + length:]
            got += 1
    return got


def http(port, ca, n, version=None):
    s = connect(port, context(ca, version), alpn=["http/1.1"])
    s.sendall(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n" * n)
    got = read_responses(s, n)
    print(s.version(), s.selected_alpn_protocol(), got)


def echo(port, ca, total):
    s = connect(port, context(ca))
    pattern = bytes(range(256)) * 256  # 64 KiB
    sent = 0
    received = bytearray()
    while sent < total:
        chunk = pattern[: min(len(pattern), total - sent)]
        s.sendall(chunk)
        sent += len(chunk)
        while len(received) < sent:
            data = s.recv(65536)
            if not data:
                raise SystemExit(f"EOF after {len(received)} of {total} bytes")
            received += data
    expected = (pattern * (total // len(pattern) + 1))[:total]
    if bytes(received) != expected:
        raise SystemExit("echoed bytes differ")
    version = s.version()
    # close_notify both ways: unwrap() sends ours and waits for the server's.
    s.unwrap()
    print(version, len(received), "clean")


def subscribe(port, ca, channel, count):
    s = connect(port, context(ca))
    s.sendall(f"SUBSCRIBE {channel}\r\n".encode())
    buf = b""
    while buf.count(b"\r\n") < 6:  # *3 $9 subscribe $N channel :1
        buf += s.recv(4096)
    print("ready", flush=True)
    buf = b""
    while buf.count(b"message\r\n") < count:
        data = s.recv(65536)
        if not data:
            raise SystemExit(f"EOF after {buf.count(b'message')} messages")
        buf += data
    print("got", buf.count(b"message\r\n"))


def resume(port, ca, version):
    ctx = context(ca, version)
    first = connect(port, ctx, alpn=["http/1.1"])
    # TLS 1.3 tickets come after the handshake: read a response first.
    first.sendall(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
    read_responses(first, 1)
    session = first.session
    first.close()
    second = connect(port, ctx, session=session, alpn=["http/1.1"])
    second.sendall(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
    read_responses(second, 1)
    print(second.version(), "reused" if second.session_reused else "full")


def truncated(port, ca):
    ctx = context(ca)
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())
            data = raw.recv(65536)
            if not data:
                raise SystemExit("EOF during the handshake")
            incoming.write(data)
    raw.sendall(outgoing.read())
    tls.write(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
    record = outgoing.read()
    raw.sendall(record[: len(record) // 2])
    raw.shutdown(socket.SHUT_WR)
    # The server must end the connection (no answer to half a request).
    while raw.recv(65536):
        pass
    print("closed")


def main():
    cmd, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rest = sys.argv[4:]
    if cmd == "http":
        http(port, ca, int(rest[0]), rest[1] if len(rest) > 1 else None)
    elif cmd == "echo":
        echo(port, ca, int(rest[0]))
    elif cmd == "subscribe":
        subscribe(port, ca, rest[0], int(rest[1]))
    elif cmd == "resume":
        resume(port, ca, rest[0])
    elif cmd == "truncated":
        truncated(port, ca)
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
