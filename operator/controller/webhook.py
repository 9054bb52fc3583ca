"""Optional Slack-compatible webhook: one message when a finished run has regressions or failed cases.

The operator calls `notify_run(results)` once per finished run (results: the `trainbench.dev/results/v1`
document with verdicts attached). The URL comes from `url=` or the environment variable
TRAINBENCH_WEBHOOK_URL (the Helm chart sets it from a Secret). The payload is Slack's incoming-webhook JSON
(`text` plus `blocks`); Mattermost, Rocket.Chat and Discord's `/slack` endpoint accept the same. Sending
never raises: a webhook that is down must not fail a benchmark run; the outcome is logged and returned.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request

from trainbench.operator.results.keys import plain_label

ENV_URL = "TRAINBENCH_WEBHOOK_URL"
MAX_LINES = 20  # per section; Slack truncates long blocks anyway
log = logging.getLogger("trainbench.operator.webhook")

_UNITS = {"mfu": "%", "tps": " tok/s", "step_time": " s", "peak_memory": " GiB", "tokens_per_joule": " tok/J"}


def _fmt(value, metric: str) -> str:
    if value is None:
        return "?"
    return f"{value:.3g}{_UNITS.get(metric, '')}" if isinstance(value, (int, float)) else str(value)


def findings(results: dict) -> tuple[list[str], list[str]]:
    """(regression lines, failure lines) of a results document."""
    regressions, failures = [], []
    for case in results.get("cases") or []:
        for metric, v in sorted((case.get("verdicts") or {}).items()):
            if isinstance(v, dict) and v.get("status") == "regression":
                change = v.get("change_pct")
                change_s = f"{change:+.1f}%" if isinstance(change, (int, float)) else "?"
                regressions.append(
                    f"{plain_label(case)}: {metric} {_fmt(v.get('baseline'), metric)} -> "
                    f"{_fmt(v.get('current'), metric)} ({change_s})"
                )
        if case.get("phase") in ("Failed", "MetricsUnavailable"):
            reason = case.get("reason") or case.get("phase")
            message = (case.get("message") or "").strip().splitlines()
            failures.append(f"{plain_label(case)}: {reason}" + (f" - {message[-1][:200]}" if message else ""))
    return regressions, failures


def build_message(results: dict, *, namespace: str | None = None, link: str | None = None) -> dict | None:
    """The Slack-compatible payload for a finished run, or None when nothing regressed or failed."""
    regressions, failures = findings(results)
    if not regressions and not failures:
        return None
    run, suite = results.get("run", "?"), results.get("suite", "?")
    where = f" in namespace {namespace}" if namespace else ""
    head = f"trainbench: run {run} of suite {suite}{where}: {len(regressions)} regression(s), {len(failures)} failed case(s)"
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{head}*"}}]
    for title, lines in (("Regressions", regressions), ("Failed cases", failures)):
        if not lines:
            continue
        shown = lines[:MAX_LINES] + ([f"... and {len(lines) - MAX_LINES} more"] if len(lines) > MAX_LINES else [])
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*\n" + "\n".join(f"- {x}" for x in shown)}}
        )
    context = f"kubectl describe benchmarkrun {run}" + (f" -n {namespace}" if namespace else "")
    if link:
        context += f" | <{link}|report>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    text = "\n".join([head, *(f"- {x}" for x in (regressions + failures)[:MAX_LINES])])
    return {"text": text, "blocks": blocks}


def send(url: str, payload: dict, *, timeout: float = 10.0, retries: int = 2) -> bool:
    """POST the payload as JSON; retry on network errors and 5xx/429. True on a 2xx answer."""
    data = json.dumps(payload).encode()
    for attempt in range(retries + 1):
        req = urllib.request.Request(
            url, data=data, method="POST", headers={"Content-Type": "application/json", "User-Agent": "trainbench"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                if 200 <= resp.status < 300:
                    return True
                log.warning("webhook answered %s", resp.status)
                return False
        except urllib.error.HTTPError as e:
            if e.code < 500 and e.code != 429:
                log.warning("webhook refused the message: HTTP %s", e.code)
                return False
            log.warning("webhook error HTTP %s (attempt %d)", e.code, attempt + 1)
        except (urllib.error.URLError, OSError) as e:
            log.warning("webhook unreachable: %s (attempt %d)", e, attempt + 1)
        if attempt < retries:
            time.sleep(min(2.0**attempt, 5.0))
    return False


def notify_run(
    results: dict,
    *,
    url: str | None = None,
    namespace: str | None = None,
    link: str | None = None,
    timeout: float = 10.0,
    retries: int = 2,
) -> bool:
    """Send one message for a finished run when it has regressions or failures. True when a message was sent."""
    url = url or os.environ.get(ENV_URL, "").strip()
    if not url:
        return False
    payload = build_message(results, namespace=namespace, link=link)
    if payload is None:
        return False
    ok = send(url, payload, timeout=timeout, retries=retries)
    if ok:
        log.info("webhook: notified about run %s", results.get("run"))
    return ok
