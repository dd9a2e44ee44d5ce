"""A loopback fake of the Hugging Face hub, for tests that drive the real ``huggingface_hub`` client.

It serves dataset repos (``{repo_id: {path: bytes}}``) on ``http://127.0.0.1:<free port>`` with the endpoints
that ``hf_hub_download``, ``HfApi.dataset_info`` and ``HfApi.list_repo_tree`` call (checked against
huggingface_hub 2.4): repo info, tree listing, and HEAD/GET of ``resolve`` URLs with ``Range`` support.
It also serves plain files at fixed URL paths (``raw``), standing in for raw.githubusercontent.com.
Pass ``endpoint=hub.url`` to the client explicitly (``HF_ENDPOINT`` is read at import time).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

_REPO = r"/api/datasets/(?P<repo>[^/]+/[^/]+)"
_INFO = re.compile(_REPO + r"(?:/revision/(?P<rev>[^/]+))?")
_TREE = re.compile(_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?")
_RESOLVE = re.compile(r"/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


class FakeHub:
    """Dataset repos served over HTTP on 127.0.0.1 in a daemon thread.

    ``gets[path]`` counts the file GETs per repo-relative path, ``requests`` logs ``"METHOD /url"`` of
    every request, and ``fail_next(path)`` makes the next GET of ``path`` send half its body, then hang up.
    ``raw[url_path] = bytes`` serves a file as-is at that URL path (e.g. ``/owner/repo/<commit>/<path>``, the
    layout of raw.githubusercontent.com); its GETs are counted in ``gets[url_path]``.
    """

    token = "hf_fakehub_SECRET_token_0123456789"

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.raw: dict[str, bytes] = {}
        self.shas: dict[str, str] = {}
        self.gated: set[str] = set()
        self.gated_files: set[str] = set()
        self.gets: Counter[str] = Counter()
        self.requests: list[str] = []
        self._fail: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None

    def add_repo(
        self, repo_id: str, files: dict[str, bytes], *, gated: bool | str = False, sha: str | None = None
    ) -> str:
        """Add (or replace) a dataset repo; returns its fixed 40-hex commit sha.

        ``gated=True`` refuses every request without ``token``; ``gated="files"`` lists the repo to anyone
        and refuses only its files, as the real hub does for a gated dataset. A refusal is 401 without
        a token and 403 with another one (an account that has not accepted the terms).
        """
        self.repos[repo_id] = dict(files)
        self.shas[repo_id] = sha or _sha1(repo_id.encode())
        (self.gated_files if gated == "files" else self.gated if gated else set()).add(repo_id)
        return self.shas[repo_id]

    def fail_next(self, path: str, times: int = 1) -> None:
        """Make the next ``times`` GETs of ``path`` send half the body, then drop the connection (0: none)."""
        self._fail[path] = times

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeHub is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeHub

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output quiet
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False):
        self.send_response(code)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, obj: object, head: bool) -> None:
        self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json"}, head)

    def _error(self, code: int, error_code: str, message: str, head: bool) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(code, body, {"Content-Type": "application/json", "X-Error-Code": error_code}, head)

    def _route(self, head: bool) -> None:
        hub = self.fake
        hub.requests.append(f"{self.command} {self.path}")
        split = urlsplit(self.path)
        url, query = unquote(split.path), parse_qs(split.query)
        if url in hub.raw:
            hub.gets[url] += not head
            return self._send(200, hub.raw[url], head=head)
        m = _TREE.fullmatch(url) or _INFO.fullmatch(url) or _RESOLVE.fullmatch(url)
        if m is None:
            return self._error(404, "NotFound", f"No route for {url}", head)
        repo_id = m["repo"]
        if repo_id not in hub.repos:
            return self._error(404, "RepoNotFound", "Repository not found", head)
        gated = repo_id in hub.gated or (repo_id in hub.gated_files and m.re is _RESOLVE)
        auth = self.headers.get("Authorization")
        if gated and auth != f"Bearer {hub.token}":
            return self._error(
                403 if auth else 401, "GatedRepo", "Access to this dataset is restricted.", head
            )
        files, sha = hub.repos[repo_id], hub.shas[repo_id]
        if (m["rev"] or "main") not in ("main", sha):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {m['rev']}", head)
        if m.re is _INFO:
            want_size = query.get("blobs", ["false"])[0].lower() == "true"
            siblings = [{"rfilename": p, **({"size": len(b)} if want_size else {})} for p, b in files.items()]
            return self._json({"id": repo_id, "sha": sha, "private": False, "siblings": siblings}, head)
        if m.re is _TREE:
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            return self._json(_tree(files, (m["path"] or "").strip("/"), recursive), head)
        path = m["path"]
        if path not in files:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {m['rev']}", head)
        self._file(path, files[path], sha, head)

    def _file(self, path: str, data: bytes, sha: str, head: bool) -> None:
        headers = {"X-Repo-Commit": sha, "ETag": f'"{_sha1(data)}"', "Accept-Ranges": "bytes"}
        if head:
            return self._send(200, data, headers, head=True)  # full Content-Length, no body
        self.fake.gets[path] += 1
        code, body = 200, data
        rng = _RANGE.fullmatch(self.headers.get("Range", ""))
        if rng and int(rng[1]) < len(data):
            start, end = int(rng[1]), int(rng[2] or len(data) - 1)
            code, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
        if self.fake._fail[path] > 0:
            self.fake._fail[path] -= 1
            self.send_response(code)
            for key, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self._send(code, body, headers)


def _tree(files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict[str, object]]:
    """Entries under ``prefix``: every file when ``recursive``, else the direct children (files, folders)."""
    entries: dict[str, dict[str, object]] = {}
    for path, data in sorted(files.items()):
        if prefix and not path.startswith(prefix + "/"):
            continue
        rest = path[len(prefix) + 1 :] if prefix else path
        if not recursive and "/" in rest:
            folder = f"{prefix}/{rest.split('/')[0]}" if prefix else rest.split("/")[0]
            entries[folder] = {"type": "directory", "oid": _sha1(folder.encode()), "size": 0, "path": folder}
            continue
        entries[path] = {"type": "file", "oid": _sha1(data), "size": len(data), "path": path}
    return list(entries.values())


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    """A private HF_HOME, no token from the environment or a stored login, no telemetry or progress bars."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    # The stored-login path is fixed when huggingface_hub is imported; point it at the temp HF_HOME.
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))


@pytest.fixture
def fake_hub(hf_env):
    """A started, empty ``FakeHub``; stopped after the test. Fill it with ``fake_hub.add_repo(...)``."""
    with FakeHub() as hub:
        yield hub
