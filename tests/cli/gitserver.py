"""Real git servers on loopback for the publish tests: `git daemon` (git://, push enabled) and `git http-backend`
behind Python's http.server (smart HTTP, Basic auth checked), plus a tiny fake of GitHub's pull-request API that
checks the request it gets (no real forge can be reached from here)."""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def bare_repo(root: Path, name: str = "results.git", main_file: str | None = "README.md") -> Path:
    """A bare repository; with `main_file`, a main branch holding that one file (for base branches / PRs)."""
    repo = root / name
    git("init", "-q", "--bare", "-b", "main", str(repo))
    if main_file:
        work = root / f"{name}-seed"
        git("init", "-q", "-b", "main", str(work))
        (work / main_file).write_text("# benchmarks\n")
        git("add", main_file, cwd=work)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "seed", cwd=work)
        git("push", "-q", str(repo), "main", cwd=work)
    return repo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GitDaemon:
    """`git daemon --enable=receive-pack` serving `base` on a loopback port: git://127.0.0.1:PORT/NAME."""

    def __init__(self, base: Path) -> None:
        self.base, self.port = base, free_port()
        exe = shutil.which("git")
        assert exe, "git is installed (Debian package git)"
        self.proc = subprocess.Popen(
            [exe, "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack", f"--base-path={base}",
             "--listen=127.0.0.1", f"--port={self.port}", str(base)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                assert self.proc.poll() is None, self.proc.stderr.read().decode()
                time.sleep(0.05)
        raise AssertionError("git daemon did not start")

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class _GitHttp(http.server.BaseHTTPRequestHandler):
    """`git http-backend` as CGI, after a Basic-auth check; /api/... answers like GitHub's pulls endpoint."""

    server: GitHttpServer

    def log_message(self, *args):
        pass

    def _auth_ok(self) -> bool:
        want = base64.b64encode(f"{self.server.username}:{self.server.token}".encode()).decode()
        return self.headers.get("Authorization") == f"Basic {want}"

    def _api(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.api_requests.append(
            {"method": method, "path": self.path, "auth": self.headers.get("Authorization"),
             "accept": self.headers.get("Accept"), "body": body}
        )  # fmt: skip
        status, doc = self.server.api_answer(method, self.path, body, self.headers)
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _cgi(self, method: str) -> None:
        if self.path.startswith("/api/"):
            return self._api(method)
        if not self._auth_ok():
            self.server.refused += 1
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = dict(
            os.environ,
            GIT_PROJECT_ROOT=str(self.server.root),
            GIT_HTTP_EXPORT_ALL="1",
            REQUEST_METHOD=method,
            PATH_INFO=path,
            QUERY_STRING=query,
            CONTENT_TYPE=self.headers.get("Content-Type", ""),
            CONTENT_LENGTH=str(len(body)),
            REMOTE_USER=self.server.username,
            REMOTE_ADDR="127.0.0.1",
            HTTP_CONTENT_ENCODING=self.headers.get("Content-Encoding", ""),
            GIT_PROTOCOL=self.headers.get("Git-Protocol", ""),
        )
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = out.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):  # noqa: N802
        self._cgi("GET")

    def do_POST(self):  # noqa: N802
        self._cgi("POST")


class GitHttpServer(http.server.ThreadingHTTPServer):
    """Smart HTTP git (http://127.0.0.1:PORT/NAME) that wants Basic `username:token`; `api_answer(method, path,
    body, headers) -> (status, json)` answers /api/..."""

    def __init__(self, root: Path, username: str, token: str) -> None:
        super().__init__(("127.0.0.1", 0), _GitHttp)
        self.root, self.username, self.token = root, username, token
        self.refused = 0
        self.api_requests: list[dict] = []
        self.api_answer = lambda method, path, body, headers: (404, {"message": "Not Found"})
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_port}/{name}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/api"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
