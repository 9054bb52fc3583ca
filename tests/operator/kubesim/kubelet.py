"""The kubelet: runs a bound pod's command as a local process (`translate_command`), with podIP 127.0.0.1 and its
own free metrics port; exit -> terminated state with exit code and termination message (the trainer's output file,
or the log tail with FallbackToLogsOnError); a memory limit is enforced by watching the process's RSS (over it:
SIGKILL, reason OOMKilled, exit 137); images under `missing.example/` cannot be pulled (ImagePullBackOff). Cluster
DNS for a multi-node case's rendezvous: `<hostname>.<subdomain>` resolves only when a headless Service
`<subdomain>` and a pod with that hostname and subdomain exist."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import sys
import tempfile
from pathlib import Path

from .common import MISSING_IMAGE_PREFIX, PODS, SERVICES, free_port, now_iso, parse_quantity


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def translate_command(container: dict, python: str, output: Path, env: dict | None = None) -> list[str]:
    """`torchrun [opts] -m trainbench.trainer ARGS` -> `python -m trainbench.trainer ARGS --device cpu
    --output FILE` (one process: the tests run tiny configs on CPU). A pod of a multi-node case
    (PET_NNODES > 1) runs torchrun for real, one CPU process per pod, so the pods rendezvous through the
    PET_* environment exactly as on a cluster."""
    cmd = list(container.get("command") or []) + list(container.get("args") or [])
    if "-m" not in cmd:
        raise ValueError(f"cannot run {cmd!r} here: expected torchrun ... -m MODULE ...")
    i = cmd.index("-m")
    tail = [*cmd[i + 1 :], "--device", "cpu", "--output", str(output)]
    if int((env or {}).get("PET_NNODES", "1")) > 1:
        return [python, "-m", "torch.distributed.run", "--nproc-per-node=1", "-m", *tail]
    return [python, "-m", *tail]


def image_id(image: str) -> str:
    """What a container runtime reports as a container's imageID: the repository pinned by the digest of the image
    it pulled (here a digest made from the reference, stable across runs)."""
    repo = image.split("@", 1)[0]
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]
    digest = image.split("@", 1)[1] if "@" in image else "sha256:" + hashlib.sha256(image.encode()).hexdigest()
    return f"docker-pullable://{repo}@{digest}"


class Kubelet:
    def __init__(self, sim, workdir: Path):
        self.sim, self.workdir = sim, workdir
        # the registry's image configs: image reference -> {"env": {...}} (a runtime starts the container with the
        # image's ENV under the pod's own env, as images/*/Dockerfile bake TRAINBENCH_IMAGE_*)
        self.images: dict[str, dict] = {}
        self.procs: dict[str, dict] = {}  # pod uid -> {proc, started, log, term, limit, ns, name}
        self.rdzv_ports: dict[str, int] = {}  # Job uid -> the rendezvous port its pods share

    async def sync(self, pod: dict) -> None:
        """A bound pod: pull its image, start its container, watch its memory, report its exit."""
        meta, status = pod["metadata"], pod.get("status") or {}
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        if uid not in self.procs:
            image = pod["spec"]["containers"][0].get("image", "")
            if image.startswith(MISSING_IMAGE_PREFIX):  # a registry that does not have it
                waiting = {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
                if status.get("containerStatuses") is None:
                    c = pod["spec"]["containers"][0]
                    cs = {"name": c["name"], "image": image, "imageID": "", "ready": False, "restartCount": 0}
                    cs["state"] = {"waiting": waiting}
                    await self.sim.patch(PODS, ns, name, {"status": {"containerStatuses": [cs]}})
                return
            await self._start(pod)
            return
        info = self.procs[uid]
        proc = info["proc"]
        if proc.returncode is None and info["limit"] and _rss(proc.pid) > info["limit"]:
            proc.kill()
            await proc.wait()
            info["oom"] = True
        if proc.returncode is not None:
            await self._terminated(pod, info)

    async def reap(self, alive: set[str]) -> None:
        """Kill the processes of pods that are gone (deleted Job -> garbage-collected pod)."""
        for uid, info in list(self.procs.items()):
            if uid not in alive:
                if info["proc"].returncode is None:
                    info["proc"].kill()
                    await info["proc"].wait()
                del self.procs[uid]

    async def _start(self, pod: dict) -> None:
        meta = pod["metadata"]
        c = pod["spec"]["containers"][0]
        d = Path(tempfile.mkdtemp(prefix=f"{meta['name'][:40]}-", dir=self.workdir))
        term, logf = d / "termination-log", d / "log"
        env = {
            k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")
        }
        env.update((self.images.get(c.get("image", "")) or {}).get("env") or {})
        for e in c.get("env") or []:
            if "value" in e:
                env[e["name"]] = e["value"]
                continue
            path = (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath", "")
            if path == "spec.nodeName":
                env[e["name"]] = pod["spec"]["nodeName"]
            elif m := re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path):
                env[e["name"]] = (meta.get(m.group(1)) or {}).get(m.group(2), "")
        if int(env.get("PET_NNODES", "1")) > 1:  # the headless Service's DNS name of index 0, on this machine
            addr = env.get("PET_MASTER_ADDR", "")
            if not self._resolves(meta["namespace"], addr):
                await self._fail_unstarted(pod, f"kubesim DNS: the rendezvous address {addr!r} does not resolve")
                return
            owner = next(o["uid"] for o in meta.get("ownerReferences") or [] if o.get("kind") == "Job")
            env["PET_MASTER_ADDR"] = "127.0.0.1"
            env["PET_MASTER_PORT"] = str(self.rdzv_ports.setdefault(owner, free_port()))
        faults = getattr(self.sim, "faults", None)
        fake = faults.fake_trainer(pod) if faults is not None and faults.fake_trainer else None
        if fake is not None:  # a stand-in for the trainer (faults.FaultPlan.fake_trainer): any termination message
            message, code, seconds = fake
            env.update(FAKE_MSG=message, FAKE_RC=str(code), FAKE_S=str(seconds), FAKE_TERM=str(term))
            argv = ["sh", "-c", 'sleep "$FAKE_S"; printf "%s" "$FAKE_MSG" > "$FAKE_TERM"; exit "$FAKE_RC"']
        else:
            argv = translate_command(c, sys.executable, term, env)
        limits = (c.get("resources") or {}).get("limits") or {}
        env["OMP_NUM_THREADS"] = str(
            max(
                1,
                int(
                    float(str(limits.get("cpu", "1")).rstrip("m"))
                    // (1000 if str(limits.get("cpu", "")).endswith("m") else 1)
                    or 1
                ),
            )
        )
        with open(logf, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=log, stderr=asyncio.subprocess.STDOUT, env=env, cwd=d
            )
        self.sim.logs[(meta["namespace"], meta["name"])] = logf
        self.procs[meta["uid"]] = {
            "proc": proc,
            "log": logf,
            "term": term,
            "limit": parse_quantity(limits.get("memory")),
            "oom": False,
            "started": now_iso(),
            "killed": None,
        }
        t = now_iso()
        await self.sim.patch(
            PODS,
            meta["namespace"],
            meta["name"],
            {
                "status": {
                    "phase": "Running",
                    "podIP": "127.0.0.1",
                    "hostIP": "127.0.0.1",
                    "startTime": t,
                    "containerStatuses": [
                        {
                            "name": c["name"],
                            "image": c["image"],
                            "imageID": image_id(c["image"]),
                            "containerID": f"sim://{pod['metadata']['uid']}",
                            "ready": True,
                            "restartCount": 0,
                            "state": {"running": {"startedAt": t}},
                        }
                    ],
                }
            },
        )

    def _resolves(self, ns: str, addr: str) -> bool:
        """Cluster DNS for `<hostname>.<subdomain>`: a headless Service `<subdomain>` in the namespace and a pod
        with that hostname and subdomain (ready or not: the Services here publish not-ready addresses)."""
        host, _, subdomain = addr.partition(".")
        svc = self.sim.find(SERVICES, ns, subdomain) if subdomain else None
        if svc is None or (svc.raw.get("spec") or {}).get("clusterIP") != "None":
            return False
        return any(
            p["spec"].get("hostname") == host and p["spec"].get("subdomain") == subdomain
            for p in self.sim.live(PODS, ns)
        )

    async def _fail_unstarted(self, pod: dict, message: str) -> None:
        """The container exits at once with code 1 and `message` (what the process would have printed)."""
        c, t = pod["spec"]["containers"][0], now_iso()
        term = {"exitCode": 1, "reason": "Error", "startedAt": t, "finishedAt": t, "message": message}
        cs = {"name": c["name"], "image": c["image"], "ready": False, "restartCount": 0, "state": {"terminated": term}}
        status = {"phase": "Failed", "podIP": "127.0.0.1", "containerStatuses": [cs]}
        await self.sim.patch(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], {"status": status})

    async def _kill(self, pod: dict, reason: str) -> None:
        info = self.procs.get(pod["metadata"]["uid"])
        if info and info["proc"].returncode is None:
            info["killed"] = reason
            info["proc"].send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(info["proc"].wait(), 5)
            except asyncio.TimeoutError:
                info["proc"].kill()
                await info["proc"].wait()
            await self._terminated(pod, info)

    async def _terminated(self, pod: dict, info: dict) -> None:
        rc = info["proc"].returncode
        code = 128 - rc if rc < 0 else rc  # a signal: 128 + signal number, as a container runtime reports
        reason = "OOMKilled" if info["oom"] else ("Completed" if code == 0 else "Error")
        if info.get("killed"):
            reason = info["killed"]
        message = info["term"].read_text(errors="replace") if info["term"].exists() else ""
        if len(message.encode()) > 4096:
            # what the trainer itself writes to /dev/termination-log (4 KiB; per-step lists dropped first)
            from trainbench.trainer.result import for_termination_log

            message = for_termination_log(json.loads(message))
        policy = pod["spec"]["containers"][0].get("terminationMessagePolicy")
        if not message and code != 0 and policy == "FallbackToLogsOnError":
            lines = info["log"].read_text(errors="replace").splitlines()[-80:]
            message = "\n".join(lines)[-2048:]
        term = {"exitCode": code, "reason": reason, "startedAt": info["started"], "finishedAt": now_iso()}
        if message:
            term["message"] = message
        c = pod["spec"]["containers"][0]
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": image_id(c["image"]),
                    "containerID": f"sim://{pod['metadata']['uid']}",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": term},
                }
            ],
        }
        await self.sim.patch(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], {"status": status})

    async def shutdown(self) -> None:
        for info in self.procs.values():
            if info["proc"].returncode is None:
                info["proc"].kill()
                await info["proc"].wait()
