"""Deploy directories under concurrency, interruption and operating-system failures: every entry recorded,
the next command accepts the directory as it is (no --force tricks), and a failure is one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from segdeploy.manifest import Manifest
from tests.helpers import NET, REPO, fails, forget_artifact, invoke, one_line_failure, run_cli, snapshot

def _reexport(net: Path, deploy: Path, seed: int = 1) -> list[str]:
    return ["export", f"{net}:build", "--input-shape", "1x3x32x48", "-o", str(deploy), "--force",
            "--model-kwargs", json.dumps({"seed": seed})]


def _accepted(deploy: Path) -> Manifest:
    """The next command takes the directory without --force: a build succeeds and every artifact verifies."""
    code, _, stderr = invoke("build", deploy, "-p", "fp16", "--calib-size", "4")
    assert code == 0 and "Traceback" not in stderr, stderr
    manifest = Manifest.load(deploy)
    for name in manifest.artifacts:
        manifest.verify(name)
    leftovers = [p.name for p in deploy.iterdir() if p.name.endswith(".tmp") or p.name == ".segdeploy.journal"]
    assert leftovers == [], leftovers
    return manifest


# -- concurrency -----------------------------------------------------------------------------------


@pytest.mark.parametrize("first, second", [(["-p", "fp16"], ["-p", "fp32", "--ort-optimize"]),
                                           (["-p", "fp32", "--ort-optimize"], ["-p", "fp16"])])
def test_two_builds_at_once_both_recorded(tiny, tmp_path, first, second):
    """The issue's case (8 of 10 trials lost an entry). The first build pauses right after reading the
    manifest until the second has started and said it waits; without the lock the second would read
    the same manifest and finish first, and the first would then overwrite its entry — every time.
    With the lock the second waits, then reads what the first recorded."""
    deploy, _ = tiny
    forget_artifact(deploy, "onnx-fp16")
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEGDEPLOY_FAULT": f"build:loaded:pause={go}"}
    env.pop("SEGDEPLOY_DEBUG", None)
    command = [sys.executable, "-m", "segdeploy", "build", str(deploy), "--calib-size", "4"]
    holder = subprocess.Popen([*command, *first], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(tmp_path / "go.reached", holder)  # it holds the lock and has read the manifest
        env.pop("SEGDEPLOY_FAULT")
        waiter = subprocess.Popen([*command, *second], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        notice = waiter.stderr.readline()  # printed after a second of waiting
        go.touch()
        _, holder_err = holder.communicate(timeout=300)
        _, waiter_err = waiter.communicate(timeout=300)
    finally:
        go.touch()
    assert holder.returncode == 0 and waiter.returncode == 0, (holder_err, waiter_err)
    manifest = Manifest.load(deploy)
    assert {"onnx-fp16", "ort-fp32"} <= set(manifest.artifacts), f"an entry was lost: {list(manifest.artifacts)}"
    for name in manifest.artifacts:
        manifest.verify(name)
    assert f"waiting for `segdeploy build` (pid {holder.pid})" in notice, notice + waiter_err


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)


def test_lock_wait_times_out_in_one_line(tiny):
    deploy, _ = tiny
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEGDEPLOY_FAULT": "build:loaded:sleep=120"}
    holder = subprocess.Popen([sys.executable, "-m", "segdeploy", "build", str(deploy), "-p", "fp32"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(deploy / ".segdeploy.journal", holder)
        before = snapshot(deploy)
        proc = run_cli("build", deploy, "-p", "fp16", env={"SEGDEPLOY_LOCK_TIMEOUT": "0.5"})
        one_line_failure(proc.returncode, proc.stdout, proc.stderr,
                         contains=(f"is in use by `segdeploy build` (pid {holder.pid})", "SEGDEPLOY_LOCK_TIMEOUT"))
        assert snapshot(deploy) == before
    finally:
        holder.kill()
        holder.wait()


# -- interruption ----------------------------------------------------------------------------------


@pytest.mark.parametrize("point, replaced", [("export:staged", False), ("export:committing", True),
                                              ("export:half-committed", True), ("export:committed", True)])
def test_killed_export_force_leaves_the_old_or_the_new_export(tiny, point, replaced):
    """The issue's case: Ctrl-C late in export --force left the new model.onnx with the old manifest.
    Killed (SIGKILL: no cleanup at all) at every step of the switch, the directory holds the old export
    or the new one, complete; the next command accepts it as is."""
    deploy, net = tiny
    old = Manifest.load(deploy).artifact("onnx-fp32").sha256
    proc = run_cli(*_reexport(net, deploy), env={"SEGDEPLOY_FAULT": f"{point}:kill"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    manifest = _accepted(deploy)
    fp32 = manifest.artifact("onnx-fp32")
    assert (fp32.sha256 != old) == replaced
    assert manifest.model.model_kwargs == ({"seed": 1} if replaced else {})
    assert "onnx-fp16" in manifest.artifacts  # rebuilt by _accepted from whichever graph is there


@pytest.mark.parametrize("point", ["export:staged", "export:committing"])
def test_ctrl_c_in_export_force_is_one_line_and_consistent(tiny, monkeypatch, point):
    deploy, net = tiny
    monkeypatch.setenv("SEGDEPLOY_FAULT", f"{point}:interrupt")
    line = fails(*_reexport(net, deploy), contains="interrupted", exit_code=130)
    assert "nothing half-written" in line
    monkeypatch.delenv("SEGDEPLOY_FAULT")
    _accepted(deploy)


def test_real_sigint_during_export(tiny, tmp_path):
    deploy, net = tiny
    before = snapshot(deploy)
    go = tmp_path / "go"  # the fault point holds the export there (new files staged) until this exists
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEGDEPLOY_FAULT": f"export:staged:pause={go}"}
    # Ctrl-C reaches a foreground command with SIGINT at its default; a test runner's worker may run
    # with SIGINT ignored, which its children inherit (then Python installs no KeyboardInterrupt).
    proc = subprocess.Popen([sys.executable, "-m", "segdeploy", *_reexport(net, deploy)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 180
        while not go.with_name("go.reached").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # a real Ctrl-C while the new graph and manifest sit under temp names
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    one_line_failure(proc.returncode, out, err, contains="interrupted", exit_code=130)
    assert snapshot(deploy) == before  # the old export, untouched; temp files gone


def test_killed_first_export_can_simply_be_run_again(tmp_path):
    net = tmp_path / "net.py"
    net.write_text(textwrap.dedent(NET))
    deploy = tmp_path / "fresh"
    args = ["export", f"{net}:build", "--input-shape", "1x3x32x48", "-o", deploy]
    assert run_cli(*args, env={"SEGDEPLOY_FAULT": "export:staged:kill"}).returncode == -signal.SIGKILL
    code, _, stderr = invoke(*args)  # no --force needed: the folder holds only segdeploy's leftovers
    assert code == 0, stderr
    assert sorted(p.name for p in deploy.iterdir()) == [".segdeploy.lock", "manifest.json", "model.onnx"]


def test_killed_rebuild_is_dropped_and_rebuilt(tiny, scene_images):
    """Killed after model.fp16.onnx was replaced but before the manifest recorded it: the next
    command drops the stale entry (and says so) instead of refusing the whole directory."""
    deploy, _ = tiny
    proc = run_cli("build", deploy, "-p", "fp16", "--fp16-block-ops", "Relu", "--calib-size", "4",
                   env={"SEGDEPLOY_FAULT": "build:written:kill"})
    assert proc.returncode == -signal.SIGKILL
    code, _, stderr = invoke("bench", deploy, "--data", scene_images, "--limit", "2", "--iterations", "1",
                             "--warmup", "0", "--rounds", "1", "--no-plots")
    assert code == 0, stderr
    assert "dropped onnx-fp16 (incomplete: build it again)" in stderr
    manifest = Manifest.load(deploy)
    assert "onnx-fp16" not in manifest.artifacts and not (deploy / "model.fp16.onnx").exists()
    _accepted(deploy)
