"""Collection: read what a trainer process reports, for the operator and the local executor alike.

- `parse_result(text)`: the final result JSON from a termination message or stdout (the
  `TRAINBENCH_RESULT <json>` line, or bare JSON); None when there is none or it was cut off.
- `parse_metrics(text)`: Prometheus exposition text from the trainer's `/metrics` -> a progress dict.
- `scrape(url)`: fetch and parse `/metrics`; `ScrapeError` with a clear message when that fails.
- `classify_exit(exit_code, ...)`: a finished process -> (phase, reason, message), the same rules for a
  pod's container exit code and a local process's return code.

Torch-free and Kubernetes-free on purpose.
"""

from __future__ import annotations

import json
import math
import signal
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from trainbench.trainer import contract as C

PROGRESS_KEYS = ("state", "step", "steps_total", "tps", "mfu", "step_time", "peak_memory_bytes", "power_w", "energy_j")

_GAUGES = {
    C.M_STEP: "step",
    C.M_STEPS_TOTAL: "steps_total",
    C.M_TPS: "tps",
    C.M_MFU: "mfu",
    C.M_STEP_TIME: "step_time",
    C.M_PEAK_MEMORY: "peak_memory_bytes",
    C.M_POWER: "power_w",
    C.M_ENERGY: "energy_j",
}
_INTS = ("step", "steps_total", "peak_memory_bytes")


class ScrapeError(RuntimeError):
    """The trainer's /metrics could not be read (refused, timed out, not Prometheus text)."""


def _loads_dict(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def parse_result(text: str | bytes | None) -> dict | None:
    """The trainer's result dict from a termination message or a whole stdout; None if absent or truncated.

    Looks for the last `TRAINBENCH_RESULT ` line first, then tries the whole text as bare JSON, then the
    last line that is a JSON object. A result cut off mid-way (a 4 KiB termination message) does not
    parse and gives None rather than a half result.
    """
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    lines = text.strip().splitlines()
    for line in reversed(lines):
        line = line.strip()
        if line.startswith(C.RESULT_LINE_PREFIX.strip()):
            return _loads_dict(line[len(C.RESULT_LINE_PREFIX.strip()) :].strip())
    whole = _loads_dict(text.strip())
    if whole is not None:
        return whole
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{"):
            found = _loads_dict(line)
            if found is not None:
                return found
    return None


def parse_metrics(text: str) -> dict:
    """Prometheus exposition text -> {state, step, steps_total, tps, mfu, step_time, peak_memory_bytes,
    power_w, energy_j}; keys the trainer did not export are None. Raises ValueError on text that is not
    Prometheus exposition format."""
    progress: dict = dict.fromkeys(PROGRESS_KEYS)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name in _GAUGES:
                key = _GAUGES[name]
                value = sample.value
                if not math.isfinite(value) or value < 0:  # NaN, +Inf, a negative gauge: no reading
                    progress[key] = None
                    continue
                progress[key] = int(value) if key in _INTS else value
            elif name == C.M_STATE and sample.value == 1:
                progress["state"] = sample.labels.get(C.M_STATE)
    return progress


def scrape(url: str, timeout: float = 2.0) -> dict:
    """GET the trainer's /metrics and parse it; raise ScrapeError saying what went wrong."""
    if "://" not in url:
        url = "http://" + url
    if not url.rstrip("/").endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read(8 * 1024 * 1024).decode("utf-8", errors="replace")
    except urllib.error.HTTPError as e:
        raise ScrapeError(f"scrape {url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ConnectionRefusedError):
            raise ScrapeError(f"scrape {url}: connection refused (is the trainer up?)") from None
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise ScrapeError(f"scrape {url}: timed out after {timeout:g}s") from None
        raise ScrapeError(f"scrape {url}: {reason}") from None
    except TimeoutError:
        raise ScrapeError(f"scrape {url}: timed out after {timeout:g}s") from None
    except OSError as e:
        raise ScrapeError(f"scrape {url}: {e}") from None
    try:
        progress = parse_metrics(body)
    except (ValueError, KeyError, IndexError) as e:
        raise ScrapeError(f"scrape {url}: not Prometheus exposition text ({e})") from None
    if all(progress[k] is None for k in PROGRESS_KEYS):
        raise ScrapeError(f"scrape {url}: no trainbench metrics in the response")
    return progress


def log_tail(text: str | None, lines: int = 20, chars: int = 2000) -> str:
    """The last lines of a log, for failure messages."""
    if not text:
        return ""
    tail = "\n".join(text.rstrip().splitlines()[-lines:])
    return tail[-chars:]


def classify_exit(
    exit_code: int | None,
    result: dict | None = None,
    logs: str | None = None,
    *,
    oom_killed: bool = False,
    timed_out: bool = False,
    interrupted: bool = False,
) -> tuple[str, str | None, str]:
    """A finished trainer -> (phase, reason, message). Phases and reasons are contract.CASE_PHASES and
    contract.FAILURE_REASONS. `exit_code` is a container exit code (128+signal for a signal) or a local
    return code (negative for a signal). `result` is the parsed result JSON, if any."""
    tail = log_tail(logs)
    error = (result or {}).get("error") if isinstance(result, dict) else None
    err_msg = error.get("message") if isinstance(error, dict) else (error if isinstance(error, str) else None)
    if interrupted:
        return "Failed", "Interrupted", "stopped by the user"
    if timed_out:
        return (
            "Failed",
            "Timeout",
            "the case ran past its timeoutSeconds" + (f"; last log lines:\n{tail}" if tail else ""),
        )
    if oom_killed or exit_code in (-signal.SIGKILL, 128 + signal.SIGKILL):
        why = "killed by the OOM killer (host memory)" if oom_killed else "killed by SIGKILL (likely the OOM killer)"
        return "Failed", "OOMKilled", why + (f"; last log lines:\n{tail}" if tail else "")
    if exit_code in C.EXIT_REASONS:
        reason = C.EXIT_REASONS[exit_code]
        if isinstance(error, dict) and error.get("reason") in C.FAILURE_REASONS:
            reason = error["reason"]
        msg = err_msg or (tail.splitlines()[-1] if tail else f"exit code {exit_code}")
        return "Failed", reason, msg
    if exit_code not in (0, None):
        msg = f"exit code {exit_code}"
        if err_msg:
            msg += f": {err_msg}"
        if tail:
            msg += f"; last log lines:\n{tail}"
        return "Failed", "Error", msg
    if result is None:
        return "MetricsUnavailable", "MetricsUnavailable", "the trainer exited 0 but left no result JSON"
    if result.get("status") == "failed":
        reason = error.get("reason") if isinstance(error, dict) else None
        return "Failed", reason if reason in C.FAILURE_REASONS else "Error", err_msg or "the trainer reported a failure"
    return "Succeeded", None, ""
