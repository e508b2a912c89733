"""One run per output folder: a second run gets one line naming the folder and the holder."""

import subprocess
import sys

import pytest

from vitprint.cli import main
from vitprint.data.runlock import LOCK_NAME, run_lock
from vitprint.errors import VitprintError

HOLD = """
import sys, time
from vitprint.data.runlock import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path / 'run'``."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_run_into_a_held_folder_is_refused_with_the_holder_named(tmp_path, holder, capsys, flat_folder):
    rc = main(["train", str(flat_folder), "--preset", "micro", "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and f"PID {holder.pid}" in err and "in use by another vitprint run" in err and "(--out)" in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing was trained or written


def test_a_killed_holder_leaves_no_stale_lock(tmp_path, holder):
    with pytest.raises(VitprintError, match="in use"):
        with run_lock(tmp_path / "run"):
            pass
    holder.kill()
    holder.wait()
    with run_lock(tmp_path / "run"):  # the holder is gone: the folder is free at once
        assert str(__import__("os").getpid()) in (tmp_path / "run" / LOCK_NAME).read_text()


def test_nested_steps_of_one_process_share_the_lock(tmp_path):
    with run_lock(tmp_path / "run"):
        with run_lock(tmp_path / "run"):
            pass
        with run_lock(tmp_path / "run" / "inner"):
            pass
    other = [sys.executable, "-c", "import sys; from vitprint.data.runlock import run_lock\n"
             "with run_lock(sys.argv[1]): pass", str(tmp_path / "run")]
    assert subprocess.run(other).returncode == 0  # released after the outer block: another process takes it
