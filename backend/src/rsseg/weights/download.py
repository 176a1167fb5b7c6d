"""Downloading weight files: resumable, hashed while streaming, moved into place only when verified.

The transfer goes to `<name>.part` in the weights dir; an interrupted or cancelled download keeps
it and the next run asks the server for the rest (`Range: bytes=N-`). A server that ignores the
range (200 instead of 206) restarts the file from zero. Nothing lands under the final name until
its size and sha256 match the registry, so a half-written checkpoint is never loaded. A file the
registry has no checksum for is checked against the hub's record instead, then pinned (attest.py).
Gated Hugging Face repositories (SAM 3) need the user's access token: it is sent to the hub only.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlsplit

from .. import __version__
from ..errors import Cancelled, WeightsError
from ..progress import CancelToken, ProgressCallback, report
from ..spec import ModelSpec, WeightFile
from .attest import attest, git_blob_sha1, pinned, record_pin
from .store import candidate_urls, weight_path, weights_dir
from .verify import CHUNK, forget_verified, record_verified, update_hash, verify_file, weight_state

SCHEMES = ("https", "http")
TIMEOUT_S = 30.0
HUB_HOST = "huggingface.co"
# the name of an environment variable, not a secret (Bandit B105 reads any "TOKEN" string as one)
ENV_HF_TOKEN = "HF_TOKEN"  # nosec B105
GATED_HINT = ("the Hugging Face repository is gated: accept its licence on its page, then give a Hugging Face access "
              f"token in the {ENV_HF_TOKEN} environment variable or log in with huggingface-cli login")


@dataclass
class _Attempt:
    """One URL tried; `offline` marks failures that mean "no network" rather than a bad server."""

    url: str
    message: str
    offline: bool = False
    reason: str = ""
    restart: bool = False  # the kept .part was at fault (removed): worth one fresh try on the same URL
    resumable: bool = False  # stopped part-way with the .part kept: the next download resumes it


class _SourceError(Exception):
    def __init__(self, attempt: _Attempt):
        super().__init__(attempt.message)
        self.attempt = attempt


def host_of(url: str) -> str:
    return urlsplit(url).hostname or url


def _unreachable(url: str, reason: str) -> _SourceError:
    return _SourceError(_Attempt(url, f"cannot reach {host_of(url)} ({reason})", offline=True, reason=reason))


def part_path(weight: WeightFile) -> Path:
    return weights_dir() / f"{weight.name}.part"


def download_weight(weight: WeightFile, progress: Optional[ProgressCallback] = None,
                    cancel: Optional[CancelToken] = None, urls: Optional[Sequence[str]] = None,
                    model_id: str = "") -> Path:
    """Fetch `weight` into the weights dir (resuming a previous .part) and return its verified path.

    A file already there is hashed once (or trusted from the verified record) instead of downloaded again.
    `model_id` (the model the file belongs to) is the subject of the errors' fixes.
    """
    weight, git_sha1, vouched_by = pinned(weight), None, None
    if not weight.published:  # the registry cannot say what the file is: the hub's record of it decides
        found = attest(weight)
        weight, vouched_by = replace(weight, size=found.size, sha256=weight.sha256 or found.sha256), found.url
        git_sha1 = None if weight.sha256 else found.git_sha1
    target = weight_path(weight)
    if weight.sha256 and _already_good(weight, target, progress):
        if vouched_by:
            record_pin(weight, vouched_by)
        return target
    candidates = candidate_urls(weight, urls)
    if not candidates:
        named = f" (model {model_id!r})" if model_id else ""
        raise WeightsError(f"{weight.name}{named} has no download URL; download it elsewhere and import it",
                           fixes=("import",), subject=model_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    attempts: list[_Attempt] = []
    for url in candidates:
        try:
            done = _fetch(url, weight, progress, cancel, git_sha1)
        except _SourceError as exc:
            attempts.append(exc.attempt)
            continue
        if vouched_by:
            record_pin(done, vouched_by)
        record_verified(done)
        return target
    message, fixes = _failure(weight, attempts)
    raise WeightsError(message, fixes=fixes, subject=model_id)


def download_model(spec: ModelSpec, progress: Optional[ProgressCallback] = None,
                   cancel: Optional[CancelToken] = None) -> list[Path]:
    """Every weight file of `spec`; progress is one "download" count of bytes over all of them (a file
    checked or resumed from disk counts as it is hashed), so a caller draws one bar per model."""
    total = sum(w.size or 0 for w in spec.weights)
    paths, before = [], 0
    for weight in spec.weights:
        def files_so_far(event, before=before, size=weight.size):
            done = min(event.done, size) if size else 0  # a file of unknown size counts when it is done
            report(progress, "download", before + done, total)

        paths.append(download_weight(weight, files_so_far if progress else None, cancel, model_id=spec.id))
        before += weight.size or 0
        report(progress, "download", before, total)
    return paths


def _already_good(weight: WeightFile, target: Path, progress: Optional[ProgressCallback]) -> bool:
    state = weight_state(weight)
    if state.verified is True:
        return True
    if state.present and state.size == weight.size:  # e.g. copied in by hand: one hash instead of a download
        try:
            verify_file(target, weight, progress)
        except WeightsError:
            forget_verified(weight)
            return False  # replaced by the download once that one verifies
        record_verified(weight)
        return True
    return False


def _failure(weight: WeightFile, attempts: list[_Attempt]) -> tuple[str, tuple[str, ...]]:
    """The message and the fixes (protocol.contracts.FIXES) of a download that no source completed."""
    if all(a.offline for a in attempts):
        hosts = ", ".join(dict.fromkeys(host_of(a.url) for a in attempts))
        reasons = "; ".join(dict.fromkeys(a.reason for a in attempts))
        return (f"could not reach {hosts} to download {weight.name} ({reasons}): no network was reachable; "
                f"download it elsewhere (from {', '.join(a.url for a in attempts)}) and import it"), ("import",)
    fixes = ("download",) if any(a.resumable for a in attempts) else ()
    if len(attempts) == 1:
        return attempts[0].message, fixes
    return f"could not download {weight.name} from any source: " + " | ".join(a.message for a in attempts), fixes


def is_hub(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == HUB_HOST or host.endswith("." + HUB_HOST)


def hub_token() -> Optional[str]:
    """The user's Hugging Face access token, which gated repositories require: $HF_TOKEN, else the file that
    huggingface-cli login writes ($HF_TOKEN_PATH, else $HF_HOME/token, by default ~/.cache/huggingface/token)."""
    token = os.environ.get(ENV_HF_TOKEN, "").strip()
    if token:
        return token
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    try:
        return Path(os.environ.get("HF_TOKEN_PATH") or os.path.join(home, "token")).expanduser().read_text(
            encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def build_request(url: str, offset: int = 0, token: Optional[str] = None) -> urllib.request.Request:
    """The GET of `url` from byte `offset`, with `token` (by default the user's Hugging Face token, for the hub's
    URLs only) as a header that follows redirects on the same host only: the hub's own redirects need it, the
    CDN it redirects to (a signed URL) never sees it."""
    headers = {"User-Agent": f"rsseg/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    token = token or (hub_token() if is_hub(url) else None)
    if token:
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    return request


def opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_HttpOnlyRedirects)


def _open(url: str, offset: int):
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise _SourceError(_Attempt(url, f"refusing to download from {url}: only http and https URLs are allowed"))
    # The scheme was checked just above (http/https only, never file: or ftp:) and redirects are held to
    # the same rule by _HttpOnlyRedirects.
    return opener().open(build_request(url, offset), timeout=TIMEOUT_S)


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects (release hosts redirect to CDNs) but only to http(s) URLs; a token goes on to the same
    host only."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme.lower() not in SCHEMES:
            raise urllib.error.HTTPError(newurl, code, f"redirect to non-http(s) URL {newurl} refused", headers, fp)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        token = req.unredirected_hdrs.get("Authorization")
        if new is not None and token and urlsplit(newurl).hostname == urlsplit(req.full_url).hostname:
            new.add_unredirected_header("Authorization", token)
        return new


def _fetch(url: str, weight: WeightFile, progress: Optional[ProgressCallback], cancel: Optional[CancelToken],
           git_sha1: Optional[str] = None) -> WeightFile:
    """One source; a stale .part (e.g. left by an older version of the file) costs one fresh retry, not an error."""
    try:
        return _fetch_once(url, weight, progress, cancel, git_sha1)
    except _SourceError as exc:
        if not exc.attempt.restart:
            raise
        return _fetch_once(url, weight, progress, cancel, git_sha1)  # the part is gone: this try starts at byte 0


def _fetch_once(url: str, weight: WeightFile, progress: Optional[ProgressCallback],
                cancel: Optional[CancelToken], git_sha1: Optional[str]) -> WeightFile:
    """Resume or start the .part, stream it, verify it, move it into place; returns `weight` with its sha256."""
    part = part_path(weight)
    offset = part.stat().st_size if part.is_file() else 0
    if offset > weight.size:  # not a prefix of this file: start over
        part.unlink()
        offset = 0
    hasher = hashlib.sha256()
    if offset:
        update_hash(hasher, part, progress, "download", weight.size)
    if offset == weight.size:  # a complete .part from an earlier run that stopped before the rename
        return _finish(part, weight, hasher.hexdigest(), url, True, git_sha1)
    try:
        response = _open(url, offset)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the server cannot resume this part: start over from this source
            part.unlink(missing_ok=True)
            raise _SourceError(_Attempt(url, f"{url} cannot resume {weight.name} (HTTP 416)", restart=True)) from None
        gated = f"; {GATED_HINT}" if exc.code in (401, 403) and is_hub(url) else ""
        raise _SourceError(_Attempt(url, f"downloading {weight.name} from {url} failed: HTTP {exc.code} "
                                         f"{exc.reason}{gated}")) from None
    except urllib.error.URLError as exc:
        raise _unreachable(url, str(exc.reason)) from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets while connecting
        raise _unreachable(url, f"{type(exc).__name__}: {exc}") from None
    with response:
        offset = _check_reply(response, url, weight, part, offset)
        if not offset:
            hasher = hashlib.sha256()
        _stream(response, url, weight, part, offset, hasher, progress, cancel)
    return _finish(part, weight, hasher.hexdigest(), url, offset > 0, git_sha1)


def _check_reply(response, url: str, weight: WeightFile, part: Path, offset: int) -> int:
    """The offset the body starts at (0 when the server ignored the range); refuses a disagreeing length."""
    status = response.status
    if offset and status == 206:
        start = _content_range_start(response.headers.get("Content-Range"))
        if start != offset:
            part.unlink(missing_ok=True)
            raise _SourceError(_Attempt(url, f"downloading {weight.name} from {url}: the server resumed at byte "
                                             f"{start}, not {offset}; the partial file was removed", restart=True))
    elif status == 200:
        offset = 0
    else:
        raise _SourceError(_Attempt(url, f"downloading {weight.name} from {url} failed: unexpected HTTP {status}"))
    length = response.headers.get("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) != weight.size - offset:
        if not offset:
            part.unlink(missing_ok=True)
        raise _SourceError(_Attempt(url, f"{url} offers {int(length) + offset} bytes but {weight.name} should be "
                                         f"{weight.size} bytes (wrong file on the server?)"))
    return offset


def _content_range_start(value: Optional[str]) -> Optional[int]:
    # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0]) if value else None
    except (IndexError, ValueError):
        return None


def _stream(response, url: str, weight: WeightFile, part: Path, offset: int, hasher,
            progress: Optional[ProgressCallback], cancel: Optional[CancelToken]) -> None:
    done = offset
    report(progress, "download", done, weight.size)
    with open(part, "ab" if offset else "wb") as out:
        while True:
            if cancel is not None and cancel.cancelled:
                raise Cancelled(f"download of {weight.name} cancelled; {part} is kept and the next download "
                                "resumes it")
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException):  # reset / timeout / IncompleteRead mid-body
                chunk = b""
            if not chunk:
                break
            if done + len(chunk) > weight.size:
                out.close()
                part.unlink(missing_ok=True)
                raise _SourceError(_Attempt(url, f"{url} sent more than the {weight.size} bytes expected for "
                                                 f"{weight.name} (wrong file on the server?); "
                                                 "the download was removed"))
            out.write(chunk)
            hasher.update(chunk)
            done += len(chunk)
            report(progress, "download", done, weight.size)
        out.flush()
        os.fsync(out.fileno())
    if done < weight.size:
        raise _SourceError(_Attempt(url, f"download of {weight.name} from {host_of(url)} stopped at {done} of "
                                         f"{weight.size} bytes (connection closed early); {part} is kept and the "
                                         "next download resumes it", resumable=True))


def _finish(part: Path, weight: WeightFile, actual: str, url: str, resumed: bool,
            git_sha1: Optional[str]) -> WeightFile:
    expected, got = (weight.sha256, actual) if weight.sha256 else (git_sha1, git_blob_sha1(part))
    if got != expected:
        part.unlink(missing_ok=True)
        kind = "sha256" if weight.sha256 else "git blob id (the hub's record)"
        raise _SourceError(_Attempt(url, f"{weight.name} downloaded from {url} failed its checksum: expected "
                                         f"{kind} {expected}, got {got}; the download was removed", restart=resumed))
    os.replace(part, weight_path(weight))  # atomic: the final name only ever holds a verified file
    return replace(weight, sha256=actual)
