"""`ablate` commands (and any `python` command line) for the tests without a fresh interpreter's start and end
(about 6 s each, torch and transformers imported and torn down, against 0.2 s).

A warm server imports torch, transformers and ablate once and computes nothing but codecarbon's hardware probe
(whose threads are joined before it returns), so no thread pool exists for a fork to break. Each command is a forked
child that takes its caller's argv, environment, working directory and standard streams (passed over a UNIX socket)
and runs `python -m ablate` as a fresh interpreter would: a real process, so a
SIGKILL at a fault point, exit codes and half-written files behave the same; it ends as an interpreter does (threads
joined, atexit run, streams flushed) less the teardown of every module. The client, a stdlib-only script named
`ablate`, ends the way its child ended (the same code, or killed by the same signal); if the client dies first (a
timeout), its child is killed.

    subprocess.run([warm.client(), "sweep", "-c", cfg])       # instead of [sys.executable, "-m", "ablate", ...]
    env["PATH"] = f"{warm.client().parent}:{env['PATH']}"      # a bash recipe's `ablate` is the client
    subprocess.run([warm.python(), "bench/bench_memory.py", "--quick"])   # instead of [sys.executable, ...]

`warm.python()` takes a script, `-c CODE` or `-m MODULE` as CPython does; a child that sets allocator or thread
variables in its environment gets them too late to matter (the server read them at its start), so a benchmark's
fresh-process measurement through it is a smoke test, not a measurement.

The console script itself is tested cold (tests/cli/test_cli.py); a test that times a start must not use this.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

CLIENT = '''\
import json, os, signal, socket, sys
conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
conn.connect({sock!r})
request = {{"argv": [*{prefix!r}, *sys.argv[1:]], "env": dict(os.environ), "cwd": os.getcwd()}}
socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
reply = conn.recv(4096)
if not reply:
    sys.exit("warm ablate: the server went away")
end = json.loads(reply)
if end.get("signal"):
    if end["signal"] != signal.SIGKILL:
        signal.signal(end["signal"], signal.SIG_DFL)
    os.kill(os.getpid(), end["signal"])
sys.exit(end["code"])
'''

_server: subprocess.Popen | None = None
_folder: Path | None = None


def _preload() -> None:
    """What every command imports, so that a child starts with it in memory."""
    import torch  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM  # noqa: F401

    import ablate.cli.app  # noqa: F401
    import ablate.scoring.evaluate  # noqa: F401
    import ablate.train.loop  # noqa: F401
    import ablate.train.seed  # noqa: F401
    import ablate.workflows.steps  # noqa: F401

    # codecarbon probes the hardware once per process (1.7 s: cpuinfo in a thread pool, joined before it returns)
    # and keeps the answer for every later tracker of the same settings: probed here, each child starts with it
    from ablate.core.energy import Meter
    from ablate.core.sections import EnergyConfig

    with Meter(EnergyConfig()):
        pass


def _run_python(argv: list[str]) -> None:
    """Run a python command line's program as CPython would: `-c CODE`, `-m MODULE` or a script, then its args."""
    import runpy

    while argv and argv[0] in ("-u", "-B", "-E", "-s", "-S"):  # flags that change nothing in a warm child
        argv = argv[1:]
    if argv[0] == "-c":
        sys.argv, sys.path[0] = ["-c", *argv[2:]], ""
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    elif argv[0] == "-m":
        sys.argv, sys.path[0] = [argv[1], *argv[2:]], os.getcwd()
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv, sys.path[0] = list(argv), str(Path(argv[0]).resolve().parent)
        runpy.run_path(argv[0], run_name="__main__")


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the caller's `python ARGV`; never returns to the server loop."""
    import threading
    import traceback

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    code = 0
    try:
        _run_python(request["argv"])
    except SystemExit as exc:  # as the interpreter reads it: None is 0, a message is printed and is 1
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    # an interpreter's end (threads joined, atexit run, streams flushed) less the teardown of every module, which
    # in a forked child costs over a second: each object it touches is a page copied
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _reply(conn: socket.socket, status: int) -> None:
    end = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"code": os.WEXITSTATUS(status)}
    try:
        conn.send(json.dumps(end).encode())
    except OSError:
        pass  # the client is gone
    conn.close()


def serve(sock_path: str) -> None:
    _preload()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(sock_path)
    server.listen(64)
    print("ready", flush=True)
    children: dict[int, socket.socket] = {}
    parent = os.getppid()
    while os.getppid() == parent:  # a test run killed hard leaves no server behind
        conns = list(children.values())
        ready, _, _ = select.select([server, *conns], [], [], 0.02)
        while children:  # reap first, so a reply never waits on the next request
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            _reply(children.pop(pid), status)
        if server in ready:
            conn, _ = server.accept()
            msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                server.close()
                for other in children.values():
                    other.close()
                conn.close()
                _run_child(json.loads(msg), fds)
            for fd in fds:
                os.close(fd)
            children[pid] = conn
        for pid, conn in list(children.items()):
            if conn in ready:  # a client never speaks after its request: readable means it hung up
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def client() -> Path:
    """The `ablate` client (its folder can go first on PATH); the server starts on the first call, stops at exit."""
    return _folder_of_clients() / "ablate"


def python() -> Path:
    """A `python` client: the command line after it runs in a warm child (a script, `-c CODE`, `-m MODULE`)."""
    return _folder_of_clients() / "python"


def _folder_of_clients() -> Path:
    global _server, _folder
    if _server is None or _server.poll() is not None:
        _stop()  # a server that died takes its folder with it
        _folder = Path(tempfile.mkdtemp(prefix="ablate-warm-"))
        sock = _folder / "warm.sock"
        _server = subprocess.Popen([sys.executable, __file__, str(sock)], stdout=subprocess.PIPE, text=True)
        assert _server.stdout.readline().strip() == "ready", "the warm ablate server did not start"
        for name, prefix in (("ablate", ["-m", "ablate"]), ("python", [])):
            (_folder / name).write_text(f"#!{sys.executable} -S\n" + CLIENT.format(sock=str(sock), prefix=prefix))
            (_folder / name).chmod(0o755)
        atexit.unregister(_stop)
        atexit.register(_stop)  # once, however often the server was started
    return _folder


def _stop() -> None:
    global _server, _folder
    if _server is not None:
        _server.kill()
        _server.wait()
        _server = None
    if _folder is not None:
        shutil.rmtree(_folder, ignore_errors=True)
        _folder = None


if __name__ == "__main__":
    serve(sys.argv[1])
