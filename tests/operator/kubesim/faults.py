"""Fault injection for the emulated cluster: a `FaultPlan` that the API server consults on every request, and
that the Job controller and kubelet consult for what a real cluster does to Jobs and pods behind the operator's
back.

- API faults (`Rule`): an error answer (409, 500, 503, ... with a Kubernetes Status body; `message` replaces
  the default text, e.g. an admission webhook's or a ValidatingAdmissionPolicy's denial), a slow answer (the
  request waits `delay` seconds first), a hung one (`hang`: no answer for `delay` seconds, default an hour,
  then 504 without carrying it out: the client's own timeout must give up first), or a lost answer (the
  request is carried out, then answered 500: a create that "failed" but did create). Rules match the HTTP
  method, a regular expression on the path and (`name`) one on the object's name (a create's body, else the
  path); each fires with probability `p` (a seeded random.Random, so a campaign is repeatable), at most `times`.
  Watch requests are never failed (kopf re-lists on its own schedule); they can lag instead:
- `watch_lag` (seconds): every watch event of the resources in `lag_resources` is streamed that much later,
  so a watcher's copy of an object lags behind the API server (the API read is current); `enabled` does
  not switch it off (a watch keeps the lag it started with).
- `job_ttl` (seconds): a TTL controller deletes every finished Job that long after it ended, as
  `ttlSecondsAfterFinished` (or a cluster policy) would; the Job's own `ttlSecondsAfterFinished` counts too.
- `fake_trainer(pod) -> (message, exit code, seconds) | None`: the kubelet runs a stand-in for the trainer: a
  shell that sleeps, writes `message` as the termination message (any bytes: malformed results) and exits.

`injected` counts what fired, by kind (e.g. "500 POST jobs", "slow", "lost", "ttl-delete")."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Rule:
    kind: str  # "error" | "slow" | "hang" | "lost"
    path: str = ""  # a regular expression searched in the request path
    methods: tuple[str, ...] = ()  # HTTP methods; () any
    status: int = 500  # the error's code ("error", "lost")
    delay: float = 0.0  # seconds ("slow"; "hang": 3600 when 0)
    name: str = ""  # a regular expression matched (fullmatch) on the object's name; "" any
    message: str | None = None  # the error's message (default: "injected fault: ...")
    p: float = 1.0  # probability of firing on a matching request
    times: int | None = None  # fire at most this often (None: no limit)
    fired: int = 0

    def matches(self, method: str, path: str, name: str | None = None) -> bool:
        if self.methods and method not in self.methods:
            return False
        if self.name and (name is None or re.fullmatch(self.name, name) is None):
            return False
        return not self.path or re.search(self.path, path) is not None


def _plural(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    if "namespaces" in parts:
        i = parts.index("namespaces")
        rest = parts[i + 2 :]
        return "/".join(rest[:1] + rest[2:]) if rest else "namespaces"
    return parts[-1] if parts else ""


@dataclass
class FaultPlan:
    seed: int = 0
    rules: list[Rule] = field(default_factory=list)
    watch_lag: float = 0.0
    lag_resources: tuple[str, ...] = ("benchmarkruns",)
    job_ttl: float | None = None
    fake_trainer: Callable[[dict], tuple[str, int, float] | None] | None = None
    enabled: bool = True  # API faults and watch lag on (the TTL controller and stand-in trainers always act)
    spared: tuple[str, ...] = ("kubectl/",)  # User-Agent prefixes never faulted: the tests' own kubectl
    injected: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def add(self, kind: str, path: str = "", methods: tuple[str, ...] = (), **kw) -> Rule:
        rule = Rule(kind, path, methods, **kw)
        self.rules.append(rule)
        return rule

    def wants_names(self) -> bool:
        """Some rule matches on object names (the API server then reads a create's body before picking)."""
        return any(rule.name for rule in self.rules)

    def pick(self, method: str, path: str, watch: bool, name: str | None = None, agent: str = "") -> Rule | None:
        """The rule that fires on this request, if any (watches and `spared` clients: never). `name`: the
        object's name; `agent`: the request's User-Agent."""
        if not self.enabled or watch or agent.startswith(self.spared):
            return None
        for rule in self.rules:
            if rule.times is not None and rule.fired >= rule.times:
                continue
            if rule.matches(method, path, name) and self.rng.random() < rule.p:
                rule.fired += 1
                what = rule.kind if rule.kind in ("slow", "hang") else f"{rule.kind} {rule.status}"
                self.injected[f"{what} {method} {_plural(path)}"] += 1
                return rule
        return None

    def lag(self, plural: str) -> float:
        return self.watch_lag if plural in self.lag_resources else 0.0

    def summary(self) -> dict[str, int]:
        """Injected faults by kind, code, method and resource (e.g. "error 409 PATCH benchmarkruns/status"),
        watch events held back ("lag watch-event") and TTL deletions ("ttl-delete jobs")."""
        return dict(sorted(self.injected.items()))
