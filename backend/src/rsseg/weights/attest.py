"""Weight files whose size or sha256 the registry cannot state: the hub vouches once, then they are pinned.

Hugging Face publishes the sha256 of every LFS file on its pages, and the registry copies it. For
a few files no such page was reachable when the entry was written (e.g. a tokenizer.json, which is
a plain git file and only has a git blob id), so the entry leaves `size` / `sha256` as None and its
URL names an immutable commit. At download time a HEAD request asks the hub what that commit holds:
an LFS file answers with `X-Linked-Etag` (its sha256) and `X-Linked-Size`; a plain git file with an
`ETag` that is its git blob id (SHA-1 of "blob <size>\\0" + content). The download is checked against
that answer, then size and sha256 are pinned in `pins.json` in the weights dir, and every later
verify, status or load uses the pin exactly like a registry checksum. Whatever the registry does
state (e.g. the sha256 with no size) must agree with the hub, or the download is refused.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Optional
from urllib.parse import urljoin, urlsplit

from .. import __version__
from ..errors import WeightsError
from ..spec import WeightFile
from .store import read_json, write_json

PINS = "pins.json"
SCHEMES = ("https", "http")
TIMEOUT_S = 30.0
MAX_HOPS = 4
_HEX = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@dataclass(frozen=True)
class Attestation:
    """What the hub says one URL holds: its size, and its sha256 (LFS) or its git blob id (plain git)."""

    url: str
    size: int
    sha256: Optional[str] = None
    git_sha1: Optional[str] = None


def read_pins() -> dict[str, Any]:
    return read_json(PINS)


def pinned(weight: WeightFile, pins: Optional[dict[str, Any]] = None) -> WeightFile:
    """`weight` with the size and sha256 pinned at an earlier download, when the registry lacks them
    (`pins`: the record, when the caller has already read it for several files)."""
    if weight.published:
        return weight
    entry = (read_pins() if pins is None else pins).get(weight.name)
    if not isinstance(entry, dict) or entry.get("url") not in weight.urls:
        return weight  # never pinned, or pinned from a URL the registry no longer names
    size, sha256 = entry.get("size"), entry.get("sha256")
    if not isinstance(size, int) or not isinstance(sha256, str) or not _HEX.fullmatch(sha256) or \
            weight.size not in (None, size) or weight.sha256 not in (None, sha256):
        return weight
    return replace(weight, size=size, sha256=sha256)


def record_pin(weight: WeightFile, url: str) -> None:
    """Remember the now-known size and sha256 of an unpublished file (`weight` must be complete)."""
    data = read_pins()
    data[weight.name] = {"size": weight.size, "sha256": weight.sha256, "url": url}
    write_json(PINS, data)


def attest(weight: WeightFile) -> Attestation:
    """Ask the hub (the registry's URLs, not a mirror) what `weight` is; WeightsError when none can say."""
    if not weight.urls:
        raise WeightsError(f"{weight.name} has no published checksum and no URL to ask the hub for one")
    problems, offline = [], True
    for url in weight.urls:
        try:
            status, headers = _ask(url)
        except OSError as exc:  # URLError, timeouts, refused connections
            problems.append(f"cannot reach {urlsplit(url).hostname} ({getattr(exc, 'reason', exc)})")
            continue
        offline = False
        found = _from_headers(url, headers) if status in (200, 301, 302, 303, 307, 308) else None
        if found is None:
            problems.append(f"{url} answered HTTP {status} without a size and a hash for the file")
            continue
        _check_agrees(weight, found)
        return found
    hint = ("no network was reachable; " if offline else "") + \
        "the registry has no checksum of its own for this file, so it needs the hub once"
    raise WeightsError(f"cannot verify {weight.name}: {'; '.join(problems)} ({hint})")


def _check_agrees(weight: WeightFile, found: Attestation) -> None:
    if weight.size is not None and weight.size != found.size:
        raise WeightsError(f"{found.url} holds {found.size} bytes but the registry says {weight.name} is "
                           f"{weight.size} bytes; refusing it")
    if weight.sha256 is not None and found.sha256 is not None and weight.sha256 != found.sha256:
        raise WeightsError(f"the hub says {found.url} has sha256 {found.sha256} but the registry says "
                           f"{weight.name} has {weight.sha256}; refusing it")


def git_blob_sha1(path: Path) -> str:
    """Git's id of a file's content: SHA-1 of "blob <size>\\0" + bytes (the hub's ETag for plain files)."""
    data = path.read_bytes()  # only plain (non-LFS) git files take this path: small text files
    # SHA-1 because git names blobs by it; it is checked against the hub's id, not used as a secret.
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # nosec B324  # git's id, not our choice


def _etag(value: Optional[str]) -> Optional[str]:
    tag = (value or "").strip().removeprefix("W/").strip('"').lower()
    return tag if _HEX.fullmatch(tag) else None


def _from_headers(url: str, headers: Mapping[str, str]) -> Optional[Attestation]:
    linked = _etag(headers.get("X-Linked-Etag"))
    tag = linked or _etag(headers.get("ETag"))
    size = headers.get("X-Linked-Size") if linked else headers.get("Content-Length")
    if tag is None or size is None or not size.strip().isdigit():
        return None
    if len(tag) == 64:
        return Attestation(url, int(size), sha256=tag)
    return Attestation(url, int(size), git_sha1=tag)


def _ask(url: str) -> tuple[int, Any]:
    """HEAD `url`, following only same-host redirects that carry no answer (the hub's canonical paths)."""
    for _ in range(MAX_HOPS):
        status, headers = _head(url)
        target = urljoin(url, headers.get("Location") or "")
        if not (300 <= status < 400 and "X-Linked-Etag" not in headers and target != url
                and urlsplit(target).hostname == urlsplit(url).hostname):
            break
        url = target
    return status, headers


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The hub's answer is on its own reply (an LFS file's is the redirect to the CDN): stop there."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _head(url: str) -> tuple[int, Any]:
    if urlsplit(url).scheme.lower() not in SCHEMES:
        raise WeightsError(f"refusing to ask {url}: only http and https URLs are allowed")
    # Scheme checked just above; redirects are not followed at all.
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": f"rsseg/{__version__}"})
    try:
        with urllib.request.build_opener(_NoRedirects).open(request, timeout=TIMEOUT_S) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as exc:  # 3xx (not followed) and 4xx/5xx both carry headers
        return exc.code, exc.headers
    except http.client.HTTPException as exc:
        raise OSError(f"{type(exc).__name__}: {exc}") from None
