"""Environment health (trainer/health.py): a real busy process on this machine shows up as other CPU load."""

import os
import signal
import subprocess
import sys
import time

from trainbench.operator.results.taint import reasons
from trainbench.trainer.health import snapshot, summarize, throttle_reasons

BUSY = "import time\nt = time.time()\nwhile time.time() - t < 30: pass\n"


def _window(seconds: float) -> dict:
    before = snapshot()
    time.sleep(seconds)
    return summarize(before, snapshot())


def _detached_hog(tmp_path) -> int:
    """A CPU hog outside this process's tree (a shell starts it in the background and exits: the hog is
    re-parented), as another user's job on the machine would be; its pid."""
    script = tmp_path / "hog.py"
    script.write_text(BUSY)
    p = subprocess.run(
        ["sh", "-c", f'"{sys.executable}" "{script}" >/dev/null 2>&1 & echo $!'], capture_output=True, text=True
    )
    return int(p.stdout.strip())


def test_another_process_loading_the_cpu_is_seen_and_taints(tmp_path):
    pid = _detached_hog(tmp_path)
    try:
        time.sleep(0.3)
        health = _window(2.0)
    finally:
        os.kill(pid, signal.SIGKILL)
    assert health["other_cpu_load"] > 0.6, health
    why = reasons([health])
    assert why and why[0].startswith("host load: other processes used"), why


def test_own_children_are_not_other_load():
    before = snapshot()
    # this process's own child burning CPU is the run's own work, not someone else's
    subprocess.run([sys.executable, "-c", BUSY.replace("30", "1.5")], check=True)
    after = snapshot()
    health = summarize(before, after)
    assert health["cpu_count"] >= 1 and health["window_s"] > 1.0
    own = after["host"]["own_busy_s"] - before["host"]["own_busy_s"]
    host = after["host"]["host_busy_s"] - before["host"]["host_busy_s"]
    assert own >= 1.2, (own, host)  # the child's ~1.5 CPU seconds count as the run's own
    # other load is what is left of the host's busy time (this machine may be shared, so only bounded by it)
    assert abs(health["other_cpu_load"] * health["window_s"] - max(0.0, host - own)) < 0.01


def test_no_gpu_here_means_no_gpu_block_and_named_throttle_bits():
    assert snapshot(0)["gpu"] is None  # no driver on the CPU machine: nothing raised
    assert throttle_reasons(0x4 | 0x40) == (["hw_thermal_slowdown"], ["sw_power_cap"])
    assert throttle_reasons(None) == ([], [])
