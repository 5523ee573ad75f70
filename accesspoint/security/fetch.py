"""The shell's revocation fetcher: CRLs by HTTP GET, OCSP by HTTP POST (urllib), with timeouts and a size cap.

This is the one I/O piece of revocation checking; ``revocation.RevocationChecker`` takes any ``Fetcher``. It is
blocking: an asyncio server runs validation in an executor thread. As every outbound call of this process (see
``servicekit.httpclient``), it reads at most ``max_bytes`` of an answer and follows no HTTP redirect: the URLs
come from certificates, and a responder that redirects could point this process anywhere.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPMessage
from typing import IO

from accesspoint.security.revocation import FetchError

_SCHEMES = ("http://", "https://")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect (urllib follows them by default, to ftp:// too): its location is never fetched."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        raise FetchError(f"HTTP {code} redirect from {req.full_url[:200]} to {newurl[:200]!r} not followed")


@dataclass(frozen=True, slots=True)
class UrlFetcher:
    """GET ``url`` (body None) or POST an OCSP request to it; FetchError on anything but a bounded 200 answer."""

    timeout: float = 5.0  # seconds, for connecting and for each read
    max_bytes: int = 16 * 1024 * 1024  # large national CRLs run to a few MiB
    user_agent: str = "accesspoint-revocation/1"

    def __call__(self, url: str, body: bytes | None, /) -> bytes:
        """The response body."""
        # Locations come from certificates an attacker may have made: no file://, ftp:// or data: URLs.
        if not url.lower().startswith(_SCHEMES):
            raise FetchError(f"not an HTTP URL: {url[:200]!r}")
        headers = {"User-Agent": self.user_agent}
        if body is not None:
            headers["Content-Type"] = "application/ocsp-request"
            headers["Accept"] = "application/ocsp-response"
        request = urllib.request.Request(url, data=body, headers=headers, method="GET" if body is None else "POST")  # noqa: S310 (scheme checked above)
        opener = urllib.request.build_opener(_NoRedirects())
        try:
            with opener.open(request, timeout=self.timeout) as response:
                if response.status != 200:
                    raise FetchError(f"HTTP {response.status} from {url}")
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise FetchError(f"{url}: response larger than {self.max_bytes} bytes")
                data: bytes = response.read(self.max_bytes + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise FetchError(f"HTTP {exc.code} from {url}") from None
        except urllib.error.URLError as exc:
            raise FetchError(f"{url}: {exc.reason}") from None
        except (OSError, ValueError) as exc:  # timeouts, resets, malformed URLs
            raise FetchError(f"{url}: {exc}") from None
        if len(data) > self.max_bytes:
            raise FetchError(f"{url}: response larger than {self.max_bytes} bytes")
        return data
