"""Publishing a finished run: commit its report.md and results.json to a branch of a git repository, optionally
open a pull request through the forge's API, and say where the report can be read.

    commit_files(target, files, message, auth)  -> Published(commit, branch, changed)   (the real `git` CLI)
    open_pull_request(api, owner, repo, token, head, base, title, body) -> the PR's web URL  (GitHub REST)
    report_url(target, commit)                  -> the published report.md's URL (template or forge default)

Used by `trainbench publish` (commands.py) and by the operator when a run with spec.publish finishes
(controller/publish.py). Kubernetes-free and torch-free: credentials come in as an `Auth`.

Credentials never go into a URL, a command line or an error message: a token is handed to git as an HTTP
`Authorization` header through the environment (GIT_CONFIG_*), an SSH key as a 0600 file named by GIT_SSH_COMMAND.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

DEFAULT_BRANCH = "trainbench-results"
DEFAULT_PATH = "benchmarks/{suite}"
AUTHOR = ("trainbench", "trainbench@users.noreply.invalid")
GITHUB_API = "https://api.github.com"
_PLACEHOLDERS = ("suite", "run", "date")
_BRANCH = re.compile(r"^(?!/)(?!.*//)(?!.*\.\.)(?!.*@\{)[A-Za-z0-9._/-]+(?<![./])$")


class PublishError(RuntimeError):
    """Publishing failed; the message is one line that names what failed and holds no credentials."""


@dataclasses.dataclass(frozen=True)
class Auth:
    """How to authenticate to the git server (and the forge's API): a token (HTTPS), an SSH key, or nothing."""

    username: str | None = None
    token: str | None = None
    ssh_key: str | None = None  # the private key's text
    known_hosts: str | None = None  # with ssh_key: the server's host keys (else the first key seen is accepted)

    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.ssh_key) if s]


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a run's files go: `path` (placeholders {suite}, {run}, {date}) on `branch` of `repo`."""

    repo: str
    branch: str = DEFAULT_BRANCH
    path: str = DEFAULT_PATH
    base: str | None = None  # a new branch starts from this one (and a pull request targets it)
    report_url_template: str | None = None  # {web} {branch} {commit} {path} {file} {suite} {run} {date}


@dataclasses.dataclass(frozen=True)
class Published:
    commit: str
    branch: str
    path: str
    changed: bool  # False: the branch already held exactly these files (nothing was pushed)


def check_branch(branch: str) -> str:
    if not branch or not _BRANCH.match(branch) or branch.endswith(".lock"):
        raise PublishError(f"branch {branch!r} is not a valid git branch name")
    return branch


def folder(template: str, *, suite: str, run: str, date: str) -> str:
    """The repository folder of a run: the template with {suite}, {run} and {date} filled in, normalised."""
    try:
        text = template.format(suite=suite, run=run, date=date)
    except (KeyError, IndexError, ValueError) as e:
        raise PublishError(
            f"path {template!r}: unknown placeholder {e}; use {', '.join('{' + p + '}' for p in _PLACEHOLDERS)}"
        ) from None
    parts = [p for p in text.strip("/").split("/") if p not in ("", ".")]
    if any(p == ".." or p == ".git" for p in parts):
        raise PublishError(f"path {text!r} must stay inside the repository")
    return "/".join(parts)


# --- git ------------------------------------------------------------------------------------------------------------


class _Git:
    """The `git` CLI in one work folder, with the credentials in the environment only."""

    def __init__(self, work: Path, auth: Auth | None, home: Path) -> None:
        self.work = work
        self.secrets = auth.secrets() if auth else []
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(
            HOME=str(home),  # no user config, no credential helper of whoever runs this
            GIT_CONFIG_NOSYSTEM="1",
            GIT_TERMINAL_PROMPT="0",
            GIT_AUTHOR_NAME=AUTHOR[0],
            GIT_AUTHOR_EMAIL=AUTHOR[1],
            GIT_COMMITTER_NAME=AUTHOR[0],
            GIT_COMMITTER_EMAIL=AUTHOR[1],
        )
        config: list[tuple[str, str]] = [("init.defaultBranch", "main")]
        if auth and auth.token:
            basic = base64.b64encode(f"{auth.username or 'x-access-token'}:{auth.token}".encode()).decode()
            config.append(("http.extraHeader", f"Authorization: Basic {basic}"))
            self.secrets.append(basic)
        if auth and auth.ssh_key:
            key = home / "id_key"
            key.write_text(auth.ssh_key if auth.ssh_key.endswith("\n") else auth.ssh_key + "\n")
            key.chmod(0o600)
            known = home / "known_hosts"
            known.write_text(auth.known_hosts or "")
            strict = "yes" if auth.known_hosts else "accept-new"
            env["GIT_SSH_COMMAND"] = (
                f"ssh -i {key} -o IdentitiesOnly=yes -o UserKnownHostsFile={known} -o StrictHostKeyChecking={strict}"
            )
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (k, v) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = k, v
        self.env = env

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return re.sub(r"(https?://)[^/@\s]+@", r"\1***@", text)  # user:password@ in a URL

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        try:
            p = subprocess.run(
                ["git", *args], cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout
            )
        except FileNotFoundError:
            raise PublishError("publishing needs the git command (apt-get install git)") from None
        except subprocess.TimeoutExpired:
            raise PublishError(f"git {args[0]}: no answer within {timeout:.0f} s") from None
        if check and p.returncode != 0:
            lines = [ln for ln in self.scrub(p.stderr or p.stdout).strip().splitlines() if ln.strip()]
            detail = next(
                (ln for ln in lines if ln.startswith(("fatal:", "error:", "remote:"))), lines[-1] if lines else ""
            )
            raise PublishError(f"git {args[0]} failed: {detail.strip() or f'exit code {p.returncode}'}")
        return p


def _remote_head(git: _Git, branch: str) -> str | None:
    p = git("ls-remote", "--heads", "origin", f"refs/heads/{branch}")
    line = p.stdout.strip().splitlines()
    return line[0].split()[0] if line else None


def commit_files(
    target: Target,
    files: dict[str, str | bytes],
    message: str,
    auth: Auth | None = None,
    *,
    folder_path: str | None = None,
    retries: int = 2,
) -> Published:
    """Commit `files` (name -> content) into `folder_path` on `target.branch` of `target.repo` and push.

    The branch is created when missing: from `target.base` when given (so a pull request shows only this
    change), else as a branch of its own. Files already identical are not committed again. A push that lost a
    race (someone pushed in between) is retried from the new head."""
    branch = check_branch(target.branch)
    if target.base:
        check_branch(target.base)
    path = folder_path if folder_path is not None else target.path
    with tempfile.TemporaryDirectory(prefix="trainbench-publish-") as tmp:
        home, work = Path(tmp) / "home", Path(tmp) / "work"
        home.mkdir()
        work.mkdir()
        git = _Git(work, auth, home)
        git("init", "-q")
        git("remote", "add", "origin", target.repo)
        for attempt in range(retries + 1):
            head = _remote_head(git, branch)
            start = head
            if head:
                git("fetch", "-q", "--depth", "1", "origin", f"refs/heads/{branch}")
                git("checkout", "-q", "-B", "publish", "FETCH_HEAD")
            elif target.base:
                if not _remote_head(git, target.base):
                    raise PublishError(f"{_scrub_url(target.repo)}: base branch {target.base!r} does not exist")
                git("fetch", "-q", "--depth", "1", "origin", f"refs/heads/{target.base}")
                git("checkout", "-q", "-B", "publish", "FETCH_HEAD")
                start = git("rev-parse", "HEAD").stdout.strip()
            else:
                git("checkout", "-q", "--orphan", "publish")
                git("rm", "-rq", "--cached", "--ignore-unmatch", ".", check=False)
            dest = work / path if path else work
            dest.mkdir(parents=True, exist_ok=True)
            names = []
            for name, content in files.items():
                f = dest / name
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(content.encode() if isinstance(content, str) else content)
                names.append(str(f.relative_to(work)))
            git("add", "--", *names)
            if start and not git("diff", "--cached", "--quiet", check=False).returncode:
                return Published(commit=start, branch=branch, path=path, changed=False)
            git("commit", "-q", "--no-verify", "-m", message)
            commit = git("rev-parse", "HEAD").stdout.strip()
            push = git("push", "-q", "--porcelain", "origin", f"HEAD:refs/heads/{branch}", check=False)
            if push.returncode == 0:
                return Published(commit=commit, branch=branch, path=path, changed=True)
            rejected = "rejected" in push.stdout or "non-fast-forward" in push.stderr or "fetch first" in push.stderr
            if not rejected or attempt == retries:
                lines = [ln for ln in git.scrub(push.stderr).splitlines() if ln.strip()]
                detail = next((ln for ln in lines if ln.startswith(("fatal:", "error:", "remote:"))), "")
                raise PublishError(f"git push to {branch!r} failed: {detail or push.stdout.strip()[-200:]}".strip())
            # someone pushed in between: start again from the new head
            git("checkout", "-q", "--detach", check=False)
            git("reset", "-q", "--hard", check=False)
    raise AssertionError("unreachable")


# --- the forge -------------------------------------------------------------------------------------------------------


def _scrub_url(url: str) -> str:
    return re.sub(r"(https?://)[^/@\s]+@", r"\1", url)


def forge_repo(url: str) -> tuple[str, str, str] | None:
    """(host, owner, name) of a forge repository URL (https://host/owner/name(.git), git@host:owner/name.git,
    ssh://git@host/owner/name); None for anything else (a local path, file://)."""
    m = re.match(r"^(?:https?|ssh|git)://(?:[^@/]+@)?([^/:]+)(?::\d+)?/(.+?)/([^/]+?)(?:\.git)?/?$", url)
    if not m:
        m = re.match(r"^(?:[^@/]+@)?([^/:]+):(?!//)(.+?)/([^/]+?)(?:\.git)?/?$", url)
    if not m:
        return None
    return m.group(1), m.group(2).strip("/"), m.group(3)


def web_url(repo: str) -> str | None:
    """The repository's web address, for the forges whose layout is known (https://host/owner/name)."""
    found = forge_repo(repo)
    return f"https://{found[0]}/{found[1]}/{found[2]}" if found else None


def report_url(target: Target, commit: str, *, folder_path: str, suite: str, run: str, date: str) -> str | None:
    """Where the published report.md can be read: the target's template, else the forge's usual blob URL
    (github.com: /blob/, GitLab: /-/blob/), else None."""
    file = f"{folder_path}/report.md" if folder_path else "report.md"
    web = web_url(target.repo)
    values = dict(
        web=web or "", branch=target.branch, commit=commit, path=folder_path, file=file, suite=suite, run=run, date=date
    )
    if target.report_url_template:
        try:
            return target.report_url_template.format(**values)
        except (KeyError, IndexError, ValueError) as e:
            raise PublishError(f"reportUrlTemplate: unknown placeholder {e}; use {', '.join(values)}") from None
    if not web:
        return None
    host = forge_repo(target.repo)[0]  # type: ignore[index]
    sep = "/-/blob/" if "gitlab" in host else "/blob/"
    return f"{web}{sep}{commit}/{file}"


def api_base(repo: str, api: str | None = None) -> str:
    """The forge API to open a pull request with: the given one, api.github.com for github.com, else
    https://HOST/api/v3 (GitHub Enterprise Server)."""
    if api:
        return api.rstrip("/")
    found = forge_repo(repo)
    if not found:
        raise PublishError(f"{_scrub_url(repo)}: not a forge repository URL; give the forge's API URL to open a PR")
    return GITHUB_API if found[0] == "github.com" else f"https://{found[0]}/api/v3"


def _request(method: str, url: str, token: str | None, body: dict | None = None, timeout: float = 30.0):
    headers = {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": "trainbench",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            doc = json.loads(e.read() or b"null")
        except ValueError:
            doc = None
        return e.code, doc
    except (urllib.error.URLError, OSError) as e:
        raise PublishError(f"{method} {url}: {getattr(e, 'reason', e)}") from None


def _forge_message(doc) -> str:
    if not isinstance(doc, dict):
        return "no JSON answer"
    errors = "; ".join(str(x.get("message") or x.get("code")) for x in doc.get("errors") or [] if isinstance(x, dict))
    return (doc.get("message") or "") + (f" ({errors})" if errors else "")


def open_pull_request(
    api: str, owner: str, name: str, token: str | None, *, head: str, base: str, title: str, body: str = ""
) -> str:
    """Open a pull request from `head` into `base` (GitHub REST: POST /repos/{owner}/{repo}/pulls) and return its
    web URL; when one is already open for that head, return that one."""
    url = f"{api.rstrip('/')}/repos/{urllib.parse.quote(owner)}/{urllib.parse.quote(name)}/pulls"
    status, doc = _request("POST", url, token, {"title": title, "head": head, "base": base, "body": body})
    if status == 201 and isinstance(doc, dict):
        return doc.get("html_url") or doc.get("url") or url
    if status == 422 and "already exists" in _forge_message(doc):
        query = urllib.parse.urlencode({"head": f"{owner}:{head}", "base": base, "state": "open"})
        status2, found = _request("GET", f"{url}?{query}", token)
        if status2 == 200 and isinstance(found, list) and found:
            return found[0].get("html_url") or found[0].get("url") or url
    hint = {
        401: " (check the token)",
        403: " (the token may lack pull-request write access)",
        404: " (no such repository, or the token cannot see it)",
    }
    raise PublishError(f"opening a pull request failed: HTTP {status}: {_forge_message(doc)}{hint.get(status, '')}")


# --- one run ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    commit: str
    branch: str
    path: str
    changed: bool
    report_url: str | None
    pull_request: str | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def publish_run(
    target: Target,
    *,
    report: str,
    results: dict | str,
    suite: str,
    run: str,
    date: str,
    auth: Auth | None = None,
    pull_request: bool = False,
    api: str | None = None,
    title: str | None = None,
) -> Outcome:
    """Commit report.md and results.json of one run, optionally open a pull request; the Outcome says where."""
    where = folder(target.path, suite=suite, run=run, date=date)
    text = results if isinstance(results, str) else json.dumps(results, indent=1, sort_keys=False) + "\n"
    done = commit_files(
        target,
        {"report.md": report, "results.json": text},
        f"trainbench: {suite} run {run}",
        auth,
        folder_path=where,
    )
    url = report_url(target, done.commit, folder_path=where, suite=suite, run=run, date=date)
    pr = None
    if pull_request:
        if not target.base:
            raise PublishError("a pull request needs a base branch (--base, spec.publish.pullRequest.base)")
        found = forge_repo(target.repo)
        if not found:
            raise PublishError(f"{_scrub_url(target.repo)}: cannot tell the forge's owner/repository to open a PR")
        pr = open_pull_request(
            api_base(target.repo, api),
            found[1],
            found[2],
            auth.token if auth else None,
            head=target.branch,
            base=target.base,
            title=title or f"trainbench: {suite} results ({run})",
            body=f"The report and results of run `{run}` of suite `{suite}`." + (f"\n\nReport: {url}" if url else ""),
        )
    return Outcome(done.commit, done.branch, where, done.changed, url, pr)
