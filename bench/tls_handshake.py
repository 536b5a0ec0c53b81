"""CPU per new TLS connection on the client side: the lean client's context against truststore's.

    python -m bench.tls_handshake [--connections 40]

A local TLS server (a child process, so its CPU is not counted) presents a
self-signed certificate for `localhost`; the system CA bundle plus that
certificate is the trust store both contexts load (`SSL_CERT_FILE`), so each
verifies a real chain against a full-size store. Client CPU (`time.process_time`)
per handshake, and once for building the context.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import ROOT, free_port, wait_port


def certificate(into: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (into / "cert.pem").write_bytes(pem)
    (into / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    system = ssl.get_default_verify_paths().cafile
    bundle = Path(system).read_bytes() if system and Path(system).exists() else b""
    (into / "bundle.pem").write_bytes(bundle + b"\n" + pem)


async def serve(port: int, directory: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=context)
    async with server:
        await server.serve_forever()


async def handshakes(context: ssl.SSLContext, port: int, count: int) -> float:
    """Client CPU ms per connection (TCP connect, TLS handshake with verification, close)."""
    async def once() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        writer.close()
        await writer.wait_closed()

    await once()  # the first connection also warms caches
    started = time.process_time()
    for _ in range(count):
        await once()
    return (time.process_time() - started) / count * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=40)
    parser.add_argument("--serve", nargs=2)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(int(args.serve[0]), Path(args.serve[1])))
        return 0
    import os

    with tempfile.TemporaryDirectory() as tmp:
        certificate(Path(tmp))
        os.environ["SSL_CERT_FILE"] = str(Path(tmp) / "bundle.pem")
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "bench.tls_handshake", "--serve", str(port), tmp], cwd=ROOT)
        try:
            wait_port(port)
            lines = []
            for name, build in contexts().items():
                started = time.process_time()
                context = build()
                built = (time.process_time() - started) * 1000
                per = asyncio.run(handshakes(context, port, args.connections))
                lines.append(f"- {name}: {per:.1f} ms CPU per new connection (context built once: {built:.1f} ms)")
        finally:
            server.terminate()
            server.wait()
    print("\n".join(lines))
    return 0


def contexts() -> dict[str, object]:
    from translators.http.client import default_tls

    out: dict[str, object] = {"ssl.create_default_context() (the lean client's, `default_tls`)": default_tls}
    try:
        import truststore

        out["truststore.SSLContext (httpx2's default)"] = lambda: truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    except ImportError:
        pass
    return out


if __name__ == "__main__":
    sys.exit(main())
