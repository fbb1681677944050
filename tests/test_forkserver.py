"""The fork server (resnet_port.forkserver) runs a job as a fresh ``python -m`` would, or leaves it to one.

One server (PyTorch's, the cheaper to start) in a folder of this test's own; the jobs are small modules
written here, run from their folder as ``python -m NAME``.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from resnet_port import forkserver

JOB = """
import os, sys, json
state = sys.modules.setdefault("job_state", type(sys)("job_state"))
seen = getattr(state, "seen", 0)
state.seen = seen + 1
try:
    import job_helper
    helper = job_helper.VALUE
except ImportError:
    helper = None
print(json.dumps({"helper": helper, "argv": sys.argv[1:], "cwd": os.getcwd(), "env": os.environ.get("JOB_VALUE"), "ppid": os.getppid(),
                  "seen": seen, "torch": "torch" in sys.modules, "umask": os.umask(0o22)}))
print("to stderr", file=sys.stderr)
what = sys.argv[1] if len(sys.argv) > 1 else ""
if what == "exit": sys.exit(int(sys.argv[2]))
if what == "message": sys.exit("bad input: say what")
if what == "raise": raise ValueError("boom")
if what == "segv": os.kill(os.getpid(), 11)
if what == "sleep": import time; time.sleep(60)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fork")
    # one OpenMP thread: with more, importing torch starts a thread, and the server refuses to fork
    env = {**{k: v for k, v in os.environ.items() if k != forkserver.VARIABLE}, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "resnet_port.forkserver", str(folder), "torch"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not (folder / "torch.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.1)
    (folder / "jobs").mkdir()
    (folder / "jobs" / "job_module.py").write_text(JOB)
    yield {**env, forkserver.VARIABLE: str(folder)}, folder / "jobs"
    proc.kill()
    proc.wait()


def run(server, *args, env=None, **kw):
    base, jobs = server
    return forkserver.run(
        [sys.executable, "-m", "job_module", *args],
        env={**base, **(env or {})},
        cwd=jobs,
        capture_output=True,
        text=True,
        framework="torch",
        **kw,
    )


def facts(p) -> dict:
    import json

    return json.loads(p.stdout.splitlines()[0])


def test_a_forked_job_is_a_fresh_python_dash_m(server):
    base, jobs = server
    p = run(server, "a", "b", env={"JOB_VALUE": "given"})
    f = facts(p)
    assert p.returncode == 0 and p.stderr == "to stderr\n"
    assert f["argv"] == ["a", "b"] and f["cwd"] == str(jobs) and f["env"] == "given"
    assert f["torch"] and f["ppid"] != os.getpid()  # forked from the server, which had torch imported
    mask = os.umask(0o027)  # another umask than the server's: the job gets the caller's
    try:
        assert facts(run(server))["umask"] == 0o027
    finally:
        os.umask(mask)
    assert facts(run(server))["seen"] == 0  # no job sees another's state


def test_exit_codes_messages_tracebacks_and_signals_are_a_processs(server):
    assert run(server, "exit", "3").returncode == 3
    p = run(server, "message")
    assert p.returncode == 1 and p.stderr.endswith("bad input: say what\n")
    p = run(server, "raise")
    assert p.returncode == 1 and "Traceback" in p.stderr and p.stderr.rstrip().endswith("ValueError: boom")
    assert run(server, "segv").returncode == -signal.SIGSEGV  # a crash is reported as one, never as a pass


def test_a_job_past_its_timeout_is_killed(server):
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run(server, "sleep", timeout=2)
    assert time.monotonic() - start < 30


def test_an_environment_the_server_was_not_started_with_gets_a_fresh_process(server):
    f = facts(run(server, env={"OMP_NUM_THREADS": "7"}))
    assert f["ppid"] == os.getpid() and not f["torch"]  # a fresh interpreter, started by this process
    f = facts(run(server, env={forkserver.VARIABLE: "/nonexistent"}))  # no server there
    assert f["ppid"] == os.getpid()


def test_a_pythonpath_with_folders_before_the_servers_is_forked_unless_they_change_what_it_imported(server, tmp_path):
    """Folders put before the server's PYTHONPATH (as tests do to block or add a module): the job is forked and
    imports from them as a fresh interpreter would; a folder holding a module the server imported, or a
    sitecustomize (which a fresh interpreter runs as it starts), gets a fresh process."""
    base, _ = server
    path = lambda *folders: os.pathsep.join([*map(str, folders), *filter(None, [base.get("PYTHONPATH")])])
    for name, module in (("extra", "job_helper.py"), ("shadow", "torch.py"), ("startup", "sitecustomize.py")):
        (tmp_path / name).mkdir()
        (tmp_path / name / module).write_text("VALUE = 'from the folder'\n")
    f = facts(run(server, env={"PYTHONPATH": path(tmp_path / "extra")}))
    assert f["ppid"] != os.getpid() and f["torch"] and f["helper"] == "from the folder"  # forked, and found it
    for name in ("shadow", "startup"):
        f = facts(run(server, env={"PYTHONPATH": path(tmp_path / "extra", tmp_path / name)}))
        assert f["ppid"] == os.getpid() and f["helper"] == "from the folder", name  # a fresh interpreter
    f = facts(run(server, env={"PYTHONPATH": "relative"}))
    assert f["ppid"] == os.getpid()


def test_python_dash_c_code_runs_as_a_fresh_interpreter_runs_it(server):
    """``python -c CODE ARGS``: argv, the working folder first on the path, a fresh __main__, and nothing of the
    server's own package (this project's) imported, as in a fresh interpreter."""
    base, jobs = server
    code = (
        "import json, os, sys\n"
        "print(json.dumps({'argv': sys.argv, 'path0': sys.path[0], 'ppid': os.getppid(), 'main': sorted(k for k in "
        "globals() if not k.startswith('__')), 'project': sorted(m for m in sys.modules if m.startswith('resnet_port'))}))\n"
        "sys.exit(int(sys.argv[2]))\n"
    )
    p = forkserver.run(
        [sys.executable, "-c", code, "a", "4"], env=base, cwd=jobs, capture_output=True, text=True, framework="torch"
    )
    f = json.loads(p.stdout)
    assert p.returncode == 4 and f["ppid"] != os.getpid()  # forked, and its exit code is the code's
    assert f["argv"] == ["-c", "a", "4"] and f["path0"] == "" and f["main"] == ["json", "os", "sys"]
    assert f["project"] == []
    p = forkserver.run(
        [sys.executable, "-c", "raise ValueError('x')"], env=base, capture_output=True, text=True, framework="torch"
    )
    assert p.returncode == 1 and 'File "<string>", line 1' in p.stderr and p.stderr.rstrip().endswith("ValueError: x")


def test_a_script_runs_as_python_script_py_runs_it(server, tmp_path):
    """``python SCRIPT.py ARGS``: argv[0] the script, its folder first on the path (a module beside it imports), a
    fresh __main__; a folder holding a module the server imported (here ``torch``) gets a fresh process."""
    base, _ = server
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "beside.py").write_text("VALUE = 'beside'\n")
    script = tmp_path / "mine" / "job.py"
    script.write_text(
        "import json, os, sys\nimport beside\n"
        "print(json.dumps({'argv': sys.argv, 'path0': sys.path[0], 'ppid': os.getppid(), 'beside': beside.VALUE, "
        "'name': __name__, 'file': __file__}))\nsys.exit(int(sys.argv[1]))\n"
    )
    p = forkserver.run([sys.executable, str(script), "3"], env=base, capture_output=True, text=True, framework="torch")
    f = json.loads(p.stdout)
    assert p.returncode == 3 and f["ppid"] != os.getpid(), p.stderr  # forked
    assert f["argv"] == [str(script), "3"] and f["path0"] == str(tmp_path / "mine") and f["beside"] == "beside"
    assert f["name"] == "__main__" and f["file"] == str(script)
    (tmp_path / "mine" / "torch.py").write_text("")  # would shadow the server's torch in a fresh interpreter
    p = forkserver.run([sys.executable, str(script), "0"], env=base, capture_output=True, text=True, framework="torch")
    assert p.returncode == 0 and json.loads(p.stdout)["ppid"] == os.getpid(), p.stderr  # a fresh process


def test_a_started_job_is_a_popen_that_signals_reach(server):
    """forkserver.start: poll, send_signal, kill, communicate, as subprocess.Popen; SIGINT interrupts the job
    (KeyboardInterrupt, then killed by SIGINT, as an interpreter ends) when asked for, whatever this process ignores."""
    base, jobs = server

    def start(*args):
        return forkserver.start(
            [sys.executable, "-m", "job_module", *args],
            env=base,
            cwd=jobs,
            capture_output=True,
            text=True,
            framework="torch",
            sigint_default=True,
        )

    job = start("sleep")
    assert isinstance(job, forkserver.Job) and job.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        job.wait(0.2)
    time.sleep(0.5)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # this process ignores it; the job does not
    try:
        job.send_signal(signal.SIGINT)
        out, err = job.communicate(timeout=30)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert job.returncode == -signal.SIGINT and "KeyboardInterrupt" in err and json.loads(out.splitlines()[0])
    job = start("sleep")
    job.kill()
    assert job.wait(30) == -signal.SIGKILL and job.poll() == -signal.SIGKILL
    job = start("exit", "5")
    assert job.communicate(timeout=30)[1] == "to stderr\n" and job.returncode == 5


def test_a_server_that_refused_or_died_starting_is_not_waited_for(tmp_path, monkeypatch):
    """A server that will never answer (it refused to fork a framework that started threads, or died importing it)
    leaves its jobs to fresh processes at once, whether it removed its ``.starting`` mark or died without doing
    so and is still a zombie its parent has not reaped; a server still importing is waited for."""
    env = {**{k: v for k, v in os.environ.items() if k not in (forkserver.VARIABLE, "OMP_NUM_THREADS")}}
    refused = subprocess.run(  # importing torch with its default threads: the server refuses, one line
        [sys.executable, "-m", "resnet_port.forkserver", str(tmp_path / "a"), "torch"],
        env={**env, "OMP_NUM_THREADS": "4"},
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "started threads; forking it would not be safe" in refused.stderr
    assert not (tmp_path / "a" / "torch.starting").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # exits, and stays a zombie: not waited for here
    while open(f"/proc/{dead.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.01)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "torch.starting").write_text(str(dead.pid))
    waits = []
    monkeypatch.setattr(forkserver.time, "sleep", waits.append)
    for folder in ("a", "b"):
        assert forkserver._server("torch", {**env, forkserver.VARIABLE: str(tmp_path / folder)}) is None
    assert waits == []
    (tmp_path / "b" / "torch.starting").write_text(str(os.getpid()))  # alive, importing: waited for (0.2 s a look)
    monkeypatch.setattr(forkserver.time, "monotonic", iter([0.0, 0.0, 200.0]).__next__)
    assert forkserver._server("torch", {**env, forkserver.VARIABLE: str(tmp_path / "b")}) is None and waits == [0.2]
    dead.wait()
