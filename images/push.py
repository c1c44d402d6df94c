"""`pyctr push NAME`: an image from the store to the registry its name names.

The order is the distribution spec's: every blob first (the config and the
layers, as the store keeps them: compressed, byte for byte what the
manifest's digests name), then the manifest, which the registry accepts
only once every blob it names is there.  A blob the registry has already
(``HEAD`` answers 200) is not sent again.  Each upload is one ``POST``
(a session) and one ``PUT`` of the whole blob with its digest; the registry
verifies the digest itself.  An upload that fails is started over (a new
session), up to registry.RETRIES times.
"""

from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyctr.errors import ImageError, NotFound, UserError

from . import auth, registry
from .progress import Quiet, short
from .pull import OCI_MANIFEST
from .reference import parse_reference

if TYPE_CHECKING:
    from .store import ImageStore


@dataclass
class PushResult:
    tag: str
    digest: str
    size: int
    sent: int  # blobs uploaded
    skipped: int  # blobs the registry had


class _Counting:
    """A blob file whose reads report progress (http.client sends it in blocks)."""

    def __init__(self, path, key: str, progress: Quiet) -> None:
        self.f = open(path, "rb")  # noqa: SIM115 - closed by _push_blob
        self.key = key
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        if data:
            self.progress.advance(self.key, len(data))
        return data

    def close(self) -> None:
        self.f.close()


def push(store: ImageStore, text: str, *, insecure: tuple[str, ...] = (),
         authfile: str | None = None, progress: Quiet | None = None,
         cancel: threading.Event | None = None) -> PushResult:
    ref = parse_reference(text)
    if ref.digest:
        raise UserError(f"cannot push {text}: a digest is not a tag",
                        hint="push by name:tag (pyctr tag IMAGE NAME:TAG first)")
    try:
        digest, _, matched = store._find(str(ref))
    except NotFound:
        raise NotFound(f"no such image: {ref.familiar()}",
                       hint="name a local image: pyctr tag IMAGE "
                            f"{ref.familiar_name()}:{ref.tag}") from None
    if matched is None:
        raise NotFound(f"no such image: {ref.familiar()}",
                       hint="push by the image's name, not its id")
    progress = progress or Quiet(io.StringIO())  # shows nothing: Quiet prints results only
    cancel = cancel or threading.Event()
    manifest = store._blob(digest)
    doc = json.loads(manifest)
    blobs = [doc["config"], *doc["layers"]]
    for b in blobs:
        if not (store.dirs.blobs / b["digest"][7:]).is_file():
            raise ImageError(f"blob {b['digest']} of {ref.familiar()} is missing from the store",
                             hint="pull or load the image again")
    reg = registry.Registry(ref.domain, creds=auth.lookup(ref.domain, authfile),
                            insecure=ref.domain in auth.insecure_registries(insecure),
                            cancel=cancel)
    scope = f"repository:{ref.path}:pull,push"
    progress.message(f"The push refers to repository [{ref.name}]")
    for b in doc["layers"]:
        progress.add(short(b["digest"]), b.get("size"), "Preparing")

    def one(desc: dict) -> bool:
        return _push_blob(store, reg, ref.path, desc, scope, progress)

    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="push") as pool:
        futures = [pool.submit(one, b) for b in blobs]
        try:
            sent = [f.result() for f in futures]
        except BaseException:
            cancel.set()
            raise
    mtype = doc.get("mediaType") or OCI_MANIFEST
    resp = reg.request("PUT", f"/v2/{ref.path}/manifests/{ref.tag}", scope=scope,
                       headers={"Content-Type": mtype}, body=manifest, ok=(201, 200))
    resp.body(1 << 16)
    said = resp.headers.get("Docker-Content-Digest")
    if said and said != digest:
        raise ImageError(f"the registry stored the manifest as {said}, not {digest}",
                         hint="the registry rewrote the manifest")
    return PushResult(ref.tag or "latest", digest, len(manifest), sum(sent),
                      len(sent) - sum(sent))


def _push_blob(store: ImageStore, reg: registry.Registry, path: str, desc: dict, scope: str,
               progress: Quiet) -> bool:
    """Upload one blob unless the registry has it; True if it was sent."""
    digest = desc["digest"]
    key = short(digest)
    is_layer = desc.get("mediaType", "").find("layer") >= 0 or "rootfs" in desc.get(
        "mediaType", "")
    head = reg.request("HEAD", f"/v2/{path}/blobs/{digest}", scope=scope, ok=(200, 404))
    head.resp.read()  # a HEAD has no body: this only frees the connection
    if head.status == 200:
        if is_layer:
            progress.state(key, "Layer already exists")
        return False
    blob = store.dirs.blobs / digest[7:]
    size = blob.stat().st_size
    last: Exception | None = None
    for attempt in range(registry.RETRIES + 1):
        if is_layer:
            progress.state(key, "Pushing")
        try:
            start = reg.request("POST", f"/v2/{path}/blobs/uploads/", scope=scope,
                                headers={"Content-Length": "0"}, body=b"", ok=(202,))
            start.body(1 << 16)
            location = start.headers.get("Location")
            if not location:
                raise ImageError(f"the registry started an upload of {digest} without a "
                                 "Location", hint="the registry is broken")
            sep = "&" if "?" in location else "?"
            url = location + f"{sep}digest={digest}"
            if "://" not in url:
                url = f"{reg.scheme}://{reg.host}" + (url if url.startswith("/") else "/" + url)
            opened: list[_Counting] = []

            def body(blob=blob, key=key, opened=opened) -> _Counting:
                opened.append(_Counting(blob, key, progress))  # a retry reads it afresh
                return opened[-1]
            try:
                done = reg.request("PUT", url, scope=scope, body=body,
                                   headers={"Content-Type": "application/octet-stream",
                                            "Content-Length": str(size)}, ok=(201,))
                done.body(1 << 16)
            finally:
                for f in opened:
                    f.close()
            if is_layer:
                progress.state(key, "Pushed")
            return True
        except (OSError, registry.http.client.HTTPException) as exc:
            last = exc
            reg._sleep(registry.BACKOFF[min(attempt, len(registry.BACKOFF) - 1)])
    raise ImageError(f"upload of {digest} failed {registry.RETRIES + 1} times: {last}",
                     hint="the network or the registry is failing; try again")
