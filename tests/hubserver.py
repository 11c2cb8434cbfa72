"""A Hugging Face Hub-protocol server for the tests, over plain directories, on 127.0.0.1.

The real ``huggingface_hub`` / ``datasets`` client code talks to it through ``HF_ENDPOINT``.
Each repository is a set of revisions, each a plain directory; branch names and commit shas
both name a revision, and a repository can answer *any* 40-hex sha with one directory (so
that the revisions mteb pins can be served from a fixture: ``X-Repo-Commit`` then carries the
sha asked for). What it speaks, as huggingface_hub 2.x calls it (file_download.py, hf_api.py,
utils/_http.py):

- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` and ``/datasets/{repo}/resolve/...``:
  ``X-Repo-Commit``, ``ETag`` (the git blob sha1; an "LFS" file's sha256, also as
  ``X-Linked-Etag`` / ``X-Linked-Size``), ``Content-Length``, ``Accept-Ranges`` and ``Range``
  (``bytes=a-b``, ``bytes=a-``: 206 with ``Content-Range``; 416 past the end);
- ``GET /api/{models,datasets}/{repo}`` and ``.../revision/{rev}``: ``id``, ``sha``,
  ``siblings``, ``private``, ``gated``;
- ``GET /api/{models,datasets}/{repo}/tree/{rev}[/{path}]`` (``recursive``) and
  ``POST .../paths-info/{rev}`` (form field ``paths``), entries as ``RepoFile``/``RepoFolder``
  read them (``type``, ``path``, ``size``, ``oid``, ``lfs``);
- the Hub's errors, with ``X-Error-Code`` (which ``hf_raise_for_status`` maps to its
  exceptions): an unknown or private repository 401 ``RepoNotFound``; a gated repository's
  files 401 ``GatedRepo`` without a token, 403 with a wrong one (its metadata and tree stay
  readable, as on the Hub); 404 ``RevisionNotFound``, 404 ``EntryNotFound``;
- a drop switch: the next N ``GET`` s of one file (or all of them) send the headers and the
  bytes before offset ``after`` of the file, then close the connection: the client sees a
  truncated body, as when a network goes away. A resumed download (``Range: bytes=after-``)
  then gets nothing more while the switch is on, so a permanent drop fails the download.

Why not olah (on PyPI, serves local git repositories through ``HF_ENDPOINT``): it was found to
answer every request without a revision with 401 offline, to crash with a 500 on a commit sha
the repository lacks (every revision mteb pins), to have no gated or private repositories, no
exact 404 codes and no way to drop a download on cue, and its ``whoami`` route forwards to the
real Hub. Each of those is what these tests need, and the protocol surface the clients use is
small: one purpose-built server over plain directories (no git, no new dependency, stdlib only)
is simpler than olah plus a second server for the rest.

Not the real Hub: no redirects to a CDN, no Xet, no pagination (one page), no commits API.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
LFS_MIN_SIZE = 1 << 20  # files from this size on are served as LFS files (sha256 ETag)


@dataclass(frozen=True)
class Blob:
    """One file of a revision: where it lies and the ids the Hub gives it."""

    path: Path
    size: int
    git_sha1: str
    sha256: str | None  # set for LFS files

    @property
    def etag(self) -> str:
        return self.sha256 or self.git_sha1

    def entry(self, rel: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "path": rel, "size": self.size, "oid": self.git_sha1}
        if self.sha256 is not None:
            out["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": 134}
        return out


def _blob(path: Path) -> Blob:
    data = path.read_bytes()
    git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    lfs = hashlib.sha256(data).hexdigest() if len(data) >= LFS_MIN_SIZE else None
    return Blob(path, len(data), git, lfs)


@dataclass
class Revision:
    """A directory's files (symlinks followed), indexed once, and its commit sha."""

    files: dict[str, Blob]
    sha: str

    @classmethod
    def of(cls, directory: Path) -> Revision:
        files = {
            p.relative_to(directory).as_posix(): _blob(p)
            for p in sorted(directory.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(directory).parts
        }
        digest = hashlib.sha1()
        for rel, blob in files.items():
            digest.update(f"{rel}\0{blob.git_sha1}\n".encode())
        return cls(files, digest.hexdigest())

    def folders(self) -> set[str]:
        return {
            "/".join(rel.split("/")[:i]) for rel in self.files for i in range(1, rel.count("/") + 1)
        }


@dataclass
class Repo:
    repo_id: str
    kind: str  # "model" or "dataset"
    refs: dict[str, Revision]  # branch names and shas -> revision
    any_sha: Revision | None = None
    gated: bool = False
    private: bool = False
    token: str | None = None  # the token that opens a gated or private repository
    file_commit: str | None = None  # an inconsistent Hub: resolve's X-Repo-Commit, whatever the sha

    def resolve(self, rev: str) -> tuple[Revision, str] | None:
        """The revision a ref names and the commit sha to report for it."""
        if rev in self.refs:
            found = self.refs[rev]
            return found, found.sha
        for found in self.refs.values():
            if found.sha == rev:
                return found, rev
        if self.any_sha is not None and SHA_RE.match(rev):
            return self.any_sha, rev
        return None


@dataclass
class Drop:
    after: int
    times: int | None  # None: every time


@dataclass
class HubState:
    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)
    drops: dict[tuple[str, str, str], Drop] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class HubServer:
    """The server: ``start()``, add repositories, read ``log``, ``stop()``."""

    def __init__(self) -> None:
        self.state = HubState()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- set-up --------------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        revisions: dict[str, Path],
        *,
        kind: str = "model",
        any_sha: str | None = None,
        gated: bool = False,
        private: bool = False,
        token: str | None = None,
    ) -> Repo:
        """Serve ``repo_id``: ``revisions`` maps branch names to directories (``main`` first).

        ``any_sha`` names one of them to answer any other 40-hex sha with.
        """
        refs = {name: Revision.of(Path(d)) for name, d in revisions.items()}
        repo = Repo(repo_id, kind, refs, refs[any_sha] if any_sha else None, gated, private, token)
        with self.state.lock:
            self.state.repos[(kind, repo_id)] = repo
        return repo

    def drop_after(
        self, repo_id: str, path: str, after: int, *, times: int | None = 1, kind: str = "model"
    ) -> None:
        """The next ``times`` GETs of ``path`` (None: all) stop at byte offset ``after``."""
        with self.state.lock:
            self.state.drops[(kind, repo_id, path)] = Drop(after, times)

    def clear_drops(self) -> None:
        with self.state.lock:
            self.state.drops.clear()

    # --- running -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HubServer:
        handler = type("BoundHubHandler", (HubHandler,), {"state": self.state})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def requests(self, method: str | None = None, contains: str = "") -> list[dict[str, Any]]:
        with self.state.lock:
            return [
                r
                for r in self.state.log
                if (method is None or r["method"] == method) and contains in r["path"]
            ]


def _folder_entry(rel: str) -> dict[str, Any]:
    return {
        "type": "directory",
        "path": rel,
        "size": 0,
        "oid": hashlib.sha1(rel.encode()).hexdigest(),
    }


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


API_RE = re.compile(
    r"^/api/(?P<kinds>models|datasets)/(?P<repo>[^/]+(?:/[^/]+)?)"
    r"(?:/(?P<op>revision|tree|paths-info)/(?P<rev>[^/]+)(?P<sub>/.*)?)?$"
)
RESOLVE_RE = re.compile(
    r"^(?P<ds>/datasets)?/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$"
)


class HubHandler(BaseHTTPRequestHandler):
    """One request; ``state`` is bound per server by :meth:`HubServer.start`."""

    state: HubState
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # --- routing -------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path = split.path
        with self.state.lock:
            self.state.log.append(
                {
                    "method": method,
                    "path": path,
                    "query": split.query,
                    "range": self.headers.get("Range"),
                }
            )
        try:
            api = API_RE.match(path)
            resolve = RESOLVE_RE.match(path)
            if api and method in ("GET", "POST"):
                self._api(method, api, parse_qs(split.query))
            elif resolve and method in ("GET", "HEAD"):
                kind = "dataset" if resolve["ds"] else "model"
                repo, rev, rel = (unquote(resolve[k]) for k in ("repo", "rev", "file"))
                self._resolve(method, kind, repo, rev, rel)
            else:
                raise HubError(404, None, f"no route for {method} {path}")
        except HubError as exc:
            self._error(exc, method)

    def _repo(self, kind: str, repo_id: str, *, files: bool) -> Repo:
        repo = self.state.repos.get((kind, repo_id))
        auth = self.headers.get("Authorization")
        opened = repo is not None and repo.token is not None and auth == f"Bearer {repo.token}"
        if repo is None or (repo.private and not opened):
            raise HubError(401, "RepoNotFound", "Repository not found")
        if files and repo.gated and not opened:
            status = 403 if auth else 401
            raise HubError(status, "GatedRepo", f"Access to model {repo_id} is restricted.")
        return repo

    def _revision(self, repo: Repo, rev: str) -> tuple[Revision, str]:
        found = repo.resolve(rev)
        if found is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return found

    # --- /api ----------------------------------------------------------------------------------

    def _api(self, method: str, match: re.Match[str], query: dict[str, list[str]]) -> None:
        kind = match["kinds"][:-1]
        repo = self._repo(kind, unquote(match["repo"]), files=False)
        op, rev = match["op"], unquote(match["rev"] or "main")
        revision, sha = self._revision(repo, rev)
        if op in (None, "revision") and method == "GET":
            self._json(self._info(repo, revision, sha))
        elif op == "tree" and method == "GET":
            sub = unquote(match["sub"] or "").strip("/")
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            self._json(self._tree(revision, sub, recursive))
        elif op == "paths-info" and method == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            self._json(self._paths_info(revision, form.get("paths", [])))
        else:
            raise HubError(404, None, f"no route for {method} {self.path}")

    @staticmethod
    def _info(repo: Repo, revision: Revision, sha: str) -> dict[str, Any]:
        return {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": sha,
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "lastModified": "2026-01-01T00:00:00.000Z",
            "tags": [],
            "siblings": [{"rfilename": rel} for rel in revision.files],
        }

    @staticmethod
    def _tree(revision: Revision, sub: str, recursive: bool) -> list[dict[str, Any]]:
        folders = revision.folders()
        if sub and sub not in folders:
            raise HubError(404, "EntryNotFound", f"{sub} does not exist on this revision")
        prefix = f"{sub}/" if sub else ""

        def wanted(rel: str) -> bool:
            return rel.startswith(prefix) and (recursive or "/" not in rel[len(prefix) :])

        dirs = [_folder_entry(d) for d in sorted(folders) if wanted(d)]
        return dirs + [blob.entry(rel) for rel, blob in revision.files.items() if wanted(rel)]

    @staticmethod
    def _paths_info(revision: Revision, paths: list[str]) -> list[dict[str, Any]]:
        folders = revision.folders()
        out: list[dict[str, Any]] = []
        for rel in paths:
            rel = rel.strip("/")
            if rel in revision.files:
                out.append(revision.files[rel].entry(rel))
            elif rel in folders:
                out.append(_folder_entry(rel))
        return out

    # --- /resolve ------------------------------------------------------------------------------

    def _resolve(self, method: str, kind: str, repo_id: str, rev: str, rel: str) -> None:
        repo = self._repo(kind, repo_id, files=True)
        revision, sha = self._revision(repo, rev)
        blob = revision.files.get(rel)
        if blob is None:
            raise HubError(404, "EntryNotFound", f"{rel} does not exist on {rev!r}")
        start, end = self._range(blob.size)
        headers = {
            "X-Repo-Commit": repo.file_commit or sha,
            "ETag": f'"{blob.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Length": str(end - start),
            "Last-Modified": formatdate(usegmt=True),
        }
        if blob.sha256 is not None:
            headers["X-Linked-Etag"] = f'"{blob.sha256}"'
            headers["X-Linked-Size"] = str(blob.size)
        partial = self.headers.get("Range") is not None
        if partial:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        self.send_response(206 if partial else 200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if method == "HEAD":
            return
        with blob.path.open("rb") as f:
            f.seek(start)
            data = f.read(end - start)
        stop = self._take_drop(kind, repo_id, rel)  # a byte offset of the file
        if stop is not None and stop < end:
            self.wfile.write(data[: max(stop - start, 0)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)

    def _range(self, size: int) -> tuple[int, int]:
        """The byte range asked for, as [start, end); the whole file without a Range header."""
        header = self.headers.get("Range")
        if header is None:
            return 0, size
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
        if match is None or (not match[1] and not match[2]):
            raise HubError(416, None, f"unsupported Range {header!r}")
        if not match[1]:  # a suffix: the last N bytes
            return max(size - int(match[2]), 0), size
        start = int(match[1])
        end = min(int(match[2]) + 1, size) if match[2] else size
        if start >= size or start >= end:
            raise HubError(416, None, f"Range {header!r} not satisfiable for {size} bytes")
        return start, end

    def _take_drop(self, kind: str, repo_id: str, rel: str) -> int | None:
        with self.state.lock:
            drop = self.state.drops.get((kind, repo_id, rel))
            if drop is None:
                return None
            if drop.times is not None:
                drop.times -= 1
                if drop.times <= 0:
                    del self.state.drops[(kind, repo_id, rel)]
            return drop.after

    # --- answers -------------------------------------------------------------------------------

    def _json(self, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, exc: HubError, method: str) -> None:
        body = json.dumps({"error": exc.message}).encode()
        self.send_response(exc.status)
        # Said, not only done: a client that reuses the connection would see it vanish (and a
        # POST's body may be unread).
        self.send_header("Connection", "close")
        if exc.code is not None:
            self.send_header("X-Error-Code", exc.code)
        self.send_header("X-Error-Message", exc.message)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)
