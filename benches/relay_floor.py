"""A minimal verifying, storing relay: the least CPU a caching proxy can spend on a cold artifact.

Why it exists: the cold 1 GiB row compares wheelgate with nginx serving the file from its page
cache, which neither hashes nor writes it. This relay does only what SPEC §4 asks of a cold fetch
(receive the body, sha256 it, write it to a file, send it on, and withhold the final bytes until
the digest matches), with no framework: one thread, 4 MiB reads (wheelgate's
`upstream::READ_BUFFER`), hashlib's sha256 (OpenSSL, SHA-NI where the CPU has it). The bench
compares wheelgate's CPU with this relay's on the same file in the same run: what is left above
it is wheelgate's own cost. Being serial, the relay's wall time is no floor (a pipelined Python
relay was slower than wheelgate: its threads' hand-offs cost more than they overlap); its CPU is.

Usage: relay_floor.py PORT UPSTREAM_PORT DIR
Requests: GET /<sha256 hex>/<path on the upstream>, one at a time. One line per request on
stdout once it is done:
    cpu SECONDS bytes N ok|mismatch
"""

import hashlib
import os
import resource
import socket
import sys

READ = 4 << 20


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def relay(client, upstream_port, directory, buf):
    request = client.recv(65536)
    _, expected, path = request.split(b" ")[1].split(b"/", 2)
    start = cpu_seconds()
    upstream = socket.create_connection(("127.0.0.1", upstream_port))
    upstream.sendall(b"GET /" + path + b" HTTP/1.0\r\nHost: upstream\r\n\r\n")
    head = upstream.recv(8192, socket.MSG_PEEK)
    head = upstream.recv(head.find(b"\r\n\r\n") + 4)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    client.sendall(head)
    name = os.path.join(directory, "relay-floor.tmp")
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # Blocks allocated up front, as wheelgate does (for this relay it made no measurable
    # difference: benches/README.md, "The floor of a cold transfer").
    os.posix_fallocate(fd, 0, length)
    view = memoryview(buf)
    digest = hashlib.sha256()
    total = 0
    ok = False
    while total < length:
        n = upstream.recv_into(buf, READ)
        if n == 0:
            break
        total += n
        digest.update(view[:n])
        written = 0
        while written < n:
            written += os.write(fd, view[written:n])
        if total == length:
            # The final bytes wait for the verdict, and are never sent on a mismatch.
            ok = digest.hexdigest() == expected.decode()
            if not ok:
                break
        client.sendall(view[:n])
    cpu = cpu_seconds() - start  # closing and unlinking the file is no part of the work
    os.close(fd)
    os.unlink(name)
    upstream.close()
    print(f"cpu {cpu:.3f} bytes {total} {'ok' if ok else 'mismatch'}", flush=True)


def main():
    port, upstream_port, directory = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(8)
    buf = bytearray(READ)
    while True:
        client, _ = listener.accept()
        with client:
            relay(client, upstream_port, directory, buf)


if __name__ == "__main__":
    main()
