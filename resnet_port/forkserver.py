"""Start framework processes by forking one that has imported the framework already.

A fresh ``python -m tf_impl.worker`` spends ~5 s of CPU importing TensorFlow and Keras before its first
line of work, a PyTorch one ~4 s (torch and torch._dynamo); the test suite starts a few hundred of them.
A *fork server* imports a framework once (nothing else: no operation has run, one thread) and then, per
request, forks a process that runs ``python -m MODULE ARGS`` (or ``python -c CODE ARGS``, or ``python SCRIPT.py ARGS``) exactly as
a fresh interpreter would: its own
pid, the caller's environment, working directory, umask, argv, stdout and stderr (passed as file
descriptors), exit code (negative for a signal), crash isolation; each job starts from the server's
pristine state, so no job sees another's.

It is opt-in: ``RESNET_PORT_FORKSERVER=DIR`` names a folder holding one server per framework
(``DIR/tf.sock``, ``DIR/torch.sock``), started with ``python -m resnet_port.forkserver DIR FRAMEWORK``.
:func:`run` uses it for a module of that framework when the caller's environment agrees with the server's
on everything read at import time (``TF_*``, ``OMP_*``, ``PYTHONPATH``, ...); otherwise, and whenever no
server answers, it starts a fresh process, as ``subprocess.run`` would.  One difference is bridged: a
``PYTHONPATH`` with folders put before the server's, where none of them holds a module the server has
imported (nor a ``sitecustomize``, which an interpreter runs at start-up): the job puts them on its
``sys.path`` where the interpreter would have, and imports what it needs from there, as a fresh one does.  The tests start the servers
(tests/conftest.py); a user never needs them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

VARIABLE = "RESNET_PORT_FORKSERVER"
#: what each server imports before it forks: the framework alone, none of this project's modules (a job imports
#: them itself, ~0.2 s), so that a job that must run without this project (``resnet_port.reload``, which drops
#: the package ``python -m`` imported) finds nothing of it registered with the framework
PRELOAD = {
    "tf": ("tensorflow", "keras"),
    "torch": ("torch", "torch._dynamo"),
}
#: the module packages each framework's server runs
PACKAGES = {"tf": "tf_impl", "torch": "torch_impl"}
#: environment variables read when a framework is imported or its runtime starts: a job whose values differ
#: from the server's gets a fresh process
_IMPORT_TIME = ("TF_", "KERAS_", "OMP_", "MKL_", "KMP_", "CUDA", "PYTHON", "LD_", "TORCH", "XLA_")


#: ... but for these, read when a job asks for them (TF_CONFIG: by a distribution strategy, as it starts)
_RUN_TIME = {"TF_CONFIG"}


def _import_time_env(env) -> dict:
    return {k: v for k, v in env.items() if k.startswith(_IMPORT_TIME) and k not in _RUN_TIME}


def framework_of(module: str) -> str | None:
    """The framework whose server runs ``module`` (``tf_impl.train`` -> 'tf'), or None."""
    top = module.split(".")[0]
    return next((key for key, package in PACKAGES.items() if package == top), None)


# -- client ----------------------------------------------------------------------------------------------


def _server(framework: str, env: dict, first: str | None = None) -> tuple[Path, list[str]] | None:
    """The socket of a server that can run a job of ``framework`` with ``env`` and the folders the job puts on
    its path first (:func:`extra_path`), or None.  ``first``: a folder the job puts before everything (a script's),
    held to the same rule."""
    folder = env.get(VARIABLE)
    if not folder or framework not in PACKAGES:
        return None
    sock, state = Path(folder) / f"{framework}.sock", Path(folder) / f"{framework}.json"
    starting = Path(folder) / f"{framework}.starting"
    deadline = time.monotonic() + 120  # a server still importing its framework
    while not state.exists():
        try:
            if not _alive(int(starting.read_text())):
                return None
        except (OSError, ValueError):  # no .starting: the server refused or failed to start
            return None
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)
    try:
        info = json.loads(state.read_text())
    except (OSError, ValueError):
        return None
    if info.get("executable") != sys.executable:
        return None
    ours, theirs = _import_time_env(env), info.get("env", {})
    if {k: v for k, v in ours.items() if k != "PYTHONPATH"} != {k: v for k, v in theirs.items() if k != "PYTHONPATH"}:
        return None
    imported, server_path = set(info.get("modules", ())), theirs.get("PYTHONPATH", "")
    extra = extra_path(ours.get("PYTHONPATH", ""), server_path, imported)
    if (
        first is not None
        and extra_path(os.pathsep.join(filter(None, [first, server_path])), server_path, imported) is None
    ):
        return None
    return None if extra is None else (sock, extra)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs: it exists and is not a zombie (a server that exited, not yet reaped by its parent)."""
    os.kill(pid, 0)  # OSError when there is no such process
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc: the signal said it exists
        return True


#: modules an interpreter imports from sys.path as it starts (site.py): a folder holding one changes what
#: a fresh process runs before its first line
_AT_START = {"sitecustomize", "usercustomize"}


def extra_path(wanted: str, server: str, imported: set[str]) -> list[str] | None:
    """The folders ``wanted`` (a PYTHONPATH) puts before ``server``'s, where a job forked from a server that
    imported ``imported`` (top-level names) runs as a fresh process with ``wanted`` would; else None."""
    if wanted == server:
        return []
    ours, theirs = wanted.split(os.pathsep), server.split(os.pathsep) if server else []
    if len(ours) <= len(theirs) or (theirs and ours[-len(theirs) :] != theirs):
        return None
    extra = ours[: len(ours) - len(theirs)]
    for folder in extra:
        if not os.path.isabs(folder):  # relative to the job's folder: left to a fresh interpreter
            return None
        try:
            names = {entry.split(".", 1)[0] for entry in os.listdir(folder)}
        except OSError:  # not a folder (a fresh interpreter finds nothing there either)
            continue
        if names & (imported | _AT_START):
            return None
    return extra


def run(
    cmd: list[str],
    *,
    env=None,
    cwd=None,
    timeout=None,
    capture_output=False,
    text=False,
    check=False,
    framework: str | None = None,
):
    """``subprocess.run(cmd, ...)`` for ``[sys.executable, "-m", MODULE, *ARGS]``, ``[sys.executable, "-c", CODE,
    *ARGS]`` or ``[sys.executable, SCRIPT.py, *ARGS]``, forked from the server of the module's framework
    (``framework``, for a module outside tf_impl and torch_impl, for code and for a script) where one agrees with
    ``env`` (see the module's docstring), else a fresh process."""
    env = dict(os.environ if env is None else env)
    found = _find(cmd, env, framework)
    if found is not None:
        try:
            return _forked(found[0], cmd, env, cwd, timeout, capture_output, text, check, found[1])
        except _NotStarted:
            pass  # no server answered before the job started: a fresh process
    return subprocess.run(cmd, env=env, cwd=cwd, timeout=timeout, capture_output=capture_output, text=text, check=check)


def _what(cmd) -> tuple[str, str, list[str]] | None:
    """``("module", MODULE, ARGS)``, ``("code", CODE, ARGS)`` or ``("script", PATH, ARGS)`` for a command this
    interpreter runs as ``-m``, ``-c`` or a ``.py`` file; None for any other command."""
    if len(cmd) < 2 or cmd[0] != sys.executable:
        return None
    if cmd[1] in ("-m", "-c") and len(cmd) >= 3:
        return ("module" if cmd[1] == "-m" else "code"), str(cmd[2]), [str(a) for a in cmd[3:]]
    if str(cmd[1]).endswith(".py") and os.path.isfile(cmd[1]):
        return "script", str(cmd[1]), [str(a) for a in cmd[2:]]
    return None


def _find(cmd, env: dict, framework: str | None) -> tuple[Path, list[str]] | None:
    """The server that can fork ``cmd`` (``python -m MODULE`` of a framework's package or ``framework``, or
    ``python -c CODE`` or ``python SCRIPT.py`` with ``framework`` named) with ``env``, and the folders its job puts
    on its path first."""
    what = _what(cmd)
    if what is None:
        return None
    if what[0] == "module" and framework is None:
        framework = framework_of(what[1])
    if not framework:
        return None
    # a script's folder comes first on its path, as the interpreter puts it
    return _server(framework, env, _script_folder(what[1]) if what[0] == "script" else None)


def _script_folder(script: str) -> str:
    return os.path.dirname(os.path.realpath(script))


class _NotStarted(Exception):
    pass


class ForkServerError(RuntimeError):
    """The server went away while its job ran: the job's outcome is unknown."""


class Job:
    """A job forked by a server, as :func:`start` gives it: ``subprocess.Popen``'s ``args``, ``pid``, ``returncode``,
    ``poll``, ``wait``, ``communicate``, ``send_signal`` and ``kill``; its output captured (``capture_output``,
    read by ``communicate``) or on this process's streams."""

    def __init__(
        self, sock: Path, cmd, env, cwd, capture_output, text, extra_path=(), sigint_default=False, streams=(None, None)
    ):
        self.args, self.text, self.returncode, self._buf = cmd, text, None, b""
        self._files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()] if capture_output else []
        null = None
        if self._files:
            fds = [f.fileno() for f in self._files]
        else:  # each stream: this process's, os.devnull (subprocess.DEVNULL) or an open file
            null = open(os.devnull, "wb") if subprocess.DEVNULL in streams else None
            fds = [
                default.fileno()
                if stream is None
                else null.fileno()
                if stream == subprocess.DEVNULL
                else stream.fileno()
                for stream, default in zip(streams, (sys.stdout, sys.stderr))
            ]
        kind, what, args = _what(cmd)
        request = {
            kind: what,
            "args": args,
            "env": env,
            "cwd": str(cwd or os.getcwd()),
            "umask": _umask(),
            "path": list(extra_path),
            "sigint_default": sigint_default,
        }
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._conn.connect(str(sock))
            socket.send_fds(self._conn, [json.dumps(request).encode() + b"\n"], fds)
            self.pid = int(self._line(None))
        except (OSError, ForkServerError, ValueError):
            self._close()
            raise _NotStarted from None
        finally:
            if null is not None:
                null.close()  # the job holds its own copy

    def _line(self, timeout) -> str:
        self._conn.settimeout(timeout)
        while not self._buf.endswith(b"\n"):
            chunk = self._conn.recv(1)
            if not chunk:
                raise ForkServerError("the fork server closed the connection before the job's exit status")
            self._buf += chunk
        line, self._buf = self._buf.decode().strip(), b""
        return line

    def wait(self, timeout=None) -> int:
        if self.returncode is None:
            try:
                self.returncode = int(self._line(timeout))
            except (TimeoutError, BlockingIOError):
                raise subprocess.TimeoutExpired(self.args, timeout) from None
            self._conn.close()
        return self.returncode

    def poll(self) -> int | None:
        try:
            return self.wait(0.0)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(9)

    def communicate(self, timeout=None):
        """(stdout, stderr) once the job has ended (None for a stream not captured)."""
        self.wait(timeout)
        out = []
        for f in self._files:
            f.seek(0)
            data = f.read()
            out.append(data.decode(errors="replace") if self.text else data)
        self._close()
        return tuple(out) if out else (None, None)

    def _close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []
        self._conn.close()


def _forked(sock: Path, cmd, env, cwd, timeout, capture_output, text, check, extra_path=()):
    job = Job(sock, cmd, env, cwd, capture_output, text, extra_path)
    try:
        job.wait(timeout)
    except subprocess.TimeoutExpired:
        job.kill()
        job.communicate()
        raise
    stdout, stderr = job.communicate()
    done = subprocess.CompletedProcess(cmd, job.returncode, stdout, stderr)
    if check:
        done.check_returncode()
    return done


def start(
    cmd: list[str],
    *,
    env=None,
    cwd=None,
    capture_output=False,
    text=False,
    framework=None,
    sigint_default=False,
    stdout=None,
    stderr=None,
):
    """``subprocess.Popen(cmd, ...)``, the job forked as :func:`run` forks it: a :class:`Job`, or a ``Popen`` where
    no server takes it.  ``sigint_default``: SIGINT interrupts the job (KeyboardInterrupt) even where this process
    was started with it ignored, as a terminal's Ctrl-C would.  Without ``capture_output``, ``stdout`` and ``stderr``
    are None (this process's), ``subprocess.DEVNULL`` or an open file, as for ``Popen``."""
    import signal

    env = dict(os.environ if env is None else env)
    found = _find(cmd, env, framework)
    if found is not None:
        try:
            return Job(found[0], cmd, env, cwd, capture_output, text, found[1], sigint_default, (stdout, stderr))
        except _NotStarted:
            pass
    pipe = subprocess.PIPE if capture_output else None
    return subprocess.Popen(
        [str(c) for c in cmd],
        env=env,
        cwd=cwd,
        stdout=pipe or stdout,
        stderr=pipe or stderr,
        text=text,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if sigint_default else None,
    )


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only be read by setting it, which
    races with a thread that creates a file, or reads it the same way, meanwhile)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


# -- server ----------------------------------------------------------------------------------------------


def serve(folder: Path, framework: str) -> None:
    import importlib
    import signal

    folder.mkdir(parents=True, exist_ok=True)
    starting = folder / f"{framework}.starting"
    starting.write_text(str(os.getpid()))
    env = _import_time_env(os.environ)  # as started: importing a framework may change its own (LD_LIBRARY_PATH)
    before = dict(os.environ)
    try:
        for module in PRELOAD[framework]:
            importlib.import_module(module)
        if os.path.isdir("/proc/self/task") and len(os.listdir("/proc/self/task")) != 1:
            sys.exit(f"forkserver: importing {framework} started threads; forking it would not be safe")
    except BaseException:
        starting.unlink(missing_ok=True)  # no server will come: clients stop waiting for one and start jobs fresh
        raise
    # what the imports set in their own environment (TensorFlow: LD_LIBRARY_PATH), given to every job as a
    # fresh process would have it after the same imports
    added = {k: v for k, v in os.environ.items() if before.get(k) != v}
    sock = folder / f"{framework}.sock"
    sock.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock))
    server.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers exit on their own: reaped at once
    modules = sorted({name.split(".", 1)[0] for name in sys.modules})
    state = {"env": env, "executable": sys.executable, "pid": os.getpid(), "modules": modules}
    (folder / f"{framework}.json.tmp").write_text(json.dumps(state))
    os.replace(folder / f"{framework}.json.tmp", folder / f"{framework}.json")
    while True:
        conn, _ = server.accept()
        if os.fork() == 0:  # the request's handler: it forks the job and reports its exit status
            server.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = _handle(conn, added)
            if code is None:  # the handler
                os._exit(0)
            sys.exit(code)  # the job: a normal interpreter exit (atexit handlers, flushed streams)
        conn.close()


def _handle(conn, added: dict) -> int | None:
    """In the handler: None once the job is done and reported; in the job: its exit code."""
    import traceback

    message, fds, _, _ = socket.recv_fds(conn, 1 << 16, 2)
    while not message.endswith(b"\n"):
        more = conn.recv(1 << 16)
        if not more:
            return None
        message += more
    request = json.loads(message.decode())
    request["env"] = {**request["env"], **added}
    pid = os.fork()
    if pid == 0:
        conn.close()
        return _job(request, fds)
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    except OSError:
        traceback.print_exc()
    return None


def _job(request: dict, fds: list[int]) -> int:
    """Become ``python -m MODULE ARGS`` (``-c CODE``, ``SCRIPT.py``) with the caller's environment, folder, umask
    and streams."""
    import random
    import runpy

    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in (devnull, *fds):
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    random.seed()  # a fresh process draws its own seeds
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    # what the server imported to serve (this module, its package) is not the job's: a fresh interpreter has none of it
    for name in [m for m in sys.modules if m.split(".")[0] == "resnet_port"]:
        del sys.modules[name]
    code, script = request.get("code"), request.get("script")
    sys.argv = ["-c" if code is not None else script or request["module"], *request["args"]]
    # as `python -c` / `python -m` put the working folder first, and `python SCRIPT.py` the script's folder
    sys.path[0] = "" if code is not None else _script_folder(script) if script else os.getcwd()
    sys.path[1:1] = request.get("path", [])  # then PYTHONPATH's folders the server's lacks
    if request.get("sigint_default"):  # as an interpreter started with SIGINT's default action sets it
        import signal

        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if code is not None:  # as `python -c CODE`: run in a fresh __main__
            import types

            main = types.ModuleType("__main__")
            main.__builtins__ = __builtins__
            sys.modules["__main__"] = main
            exec(compile(code, "<string>", "exec"), main.__dict__)
        elif script is not None:  # as `python SCRIPT.py`
            runpy.run_path(script, run_name="__main__")
        else:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # as the interpreter ends on one: the traceback, then killed by SIGINT
        import signal
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException:
        import traceback

        traceback.print_exc()
        return 1
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[1] not in PRELOAD:
        sys.exit(f"usage: python -m resnet_port.forkserver FOLDER {{{','.join(PRELOAD)}}}")
    serve(Path(argv[0]), argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
