"""Server TLS for the HTTP and admin listeners, with certificate files reloaded on change.

``ReloadingServerTLS.context`` is the ``ssl.SSLContext`` handed to the
listener. Its SNI callback runs at the start of every handshake (also when the
client sends no server name): it compares the files' modification times with
those last loaded and, when they changed, loads them into a fresh context and
switches the handshake to it. New connections therefore get the new
certificate without a restart; connections already open keep theirs.

A reload that fails (a half-written file, a key that does not match) keeps
the previous certificate and is logged once per change, so a rotation in
progress never takes the listener down.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

log = logging.getLogger("exchange.node.tls")


class TLSConfigError(Exception):
    pass


class ReloadingServerTLS:
    """A server context for ``cert``/``key``; ``client_ca`` requires client certificates."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert = cert
        self.key = key
        self.client_ca = client_ca
        self.reloads = 0
        self._stamp = self._mtimes()
        self._failed_stamp: tuple[int, ...] | None = None
        self._current = self._build()
        # The listener's own context: it holds a certificate too (OpenSSL wants
        # one before the callback runs) but every handshake is moved to _current.
        self.context = self._build()
        self.context.sni_callback = self._on_handshake

    def _mtimes(self) -> tuple[int, ...]:
        paths = [self.cert, self.key] + ([self.client_ca] if self.client_ca else [])
        try:
            return tuple(p.stat().st_mtime_ns for p in paths)
        except OSError as exc:
            raise TLSConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
            if self.client_ca is not None:
                context.load_verify_locations(cafile=self.client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(
                f"cannot load {self.cert} / {self.key}"
                + (f" / {self.client_ca}" if self.client_ca else "")
                + f": {exc}"
            ) from None
        return context

    def maybe_reload(self) -> bool:
        """Load the files again if they changed since the last load; True when reloaded."""
        try:
            stamp = self._mtimes()
        except TLSConfigError:
            return False  # mid-rotation (file replaced): keep serving the old certificate
        if stamp == self._stamp or stamp == self._failed_stamp:
            return False
        try:
            self._current = self._build()
        except TLSConfigError as exc:
            self._failed_stamp = stamp
            log.error("TLS certificate reload failed; keeping the previous one: %s", exc)
            return False
        self._stamp = stamp
        self.reloads += 1
        log.info("TLS certificate reloaded", extra={"cert": str(self.cert)})
        return True

    def _on_handshake(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext
    ) -> None:
        self.maybe_reload()
        ssl_object.context = self._current
