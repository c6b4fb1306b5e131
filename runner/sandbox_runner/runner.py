"""The sandbox runner: runs one program under supervision and prints one result line.

It runs inside every sandbox (a pod's container, or bubblewrap on the local backend) and is the
only program there besides the user's. Standard library only, Python >= 3.9, one file, so it ships
inside a ConfigMap and runs in any image that has python3. Invocation and both documents:
docs/runner-protocol.md.

    python3 -I -S runner.py [--isolation-wait SECONDS] SPEC_PATH     (SPEC_PATH "-": from stdin)

--isolation-wait (a pod's runner) first waits for evidence that the network is cut off: the
isolation gate, below.

Start-up time is most of its cost, so it avoids modules that pull in re/enum/typing: it uses
the C halves of json and ctypes (_json, _ctypes) and select.poll instead of json, ctypes and
selectors, which together would add about 10 ms to every execution.
"""

import _ctypes
import _json
import _signal
import binascii
import os
import select
import stat
import sys
import time
import zlib

RESULT_MARKER = "@@sandbox-result@@ "
DEFAULT_LIMITS = {  # the output caps; result_bytes bounds the whole document (see serialise_within)
    "stdout_bytes": 512 << 10,
    "stderr_bytes": 128 << 10,
    "output_files": 32,
    "output_file_bytes": 256 << 10,
    "output_files_bytes": 512 << 10,
    "result_bytes": 1 << 20,
    # RLIMIT_FSIZE of the program: no file it writes grows past this, wherever it lies (the work
    # dir, /tmp, or a node file such as the kubelet's 0666 /dev/termination-log).
    "file_bytes": 64 << 20,
}
MIN_RESULT_BYTES = 4096  # room for every field of an empty result and a long reason
GRACE_SECONDS = 0.5  # between SIGTERM and SIGKILL when the wall-clock limit is hit
REAP_SECONDS = 5.0  # how long killing leftover processes may take before the runner gives up
MAX_SCANNED_ENTRIES = 100_000  # output collection stops here, so a million files cannot stall it
MAX_DEPTH = 64  # output collection does not descend deeper (one open fd per level)
READ_CHUNK = 1 << 16
MIB = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"  # how a pod's spec starts (compressed to fit its ConfigMap)

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
# Signal numbers to names without importing `signal` (which imports enum); aliases left out.
SIGNAL_NAMES = {
    getattr(_signal, name): name
    for name in dir(_signal)
    if name.startswith("SIG") and "_" not in name and name not in ("SIGIOT", "SIGCLD", "SIGPOLL")
}
# Every signal a handler can be set for: the standard ones and the real-time range.
CATCHABLE_SIGNALS = tuple(
    signum for signum in range(1, _signal.NSIG) if signum not in (_signal.SIGKILL, _signal.SIGSTOP))


class SpecError(Exception):
    """The spec or its files cannot be used; the message says what to fix."""


# --- JSON through the C accelerator (importing json costs ~7 ms of re and enum) -------------


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


class _JsonOptions:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_reject_constant)


_scan_json = _json.make_scanner(_JsonOptions)
quote_json = _json.encode_basestring_ascii


def parse_json(text: str) -> object:
    """Parse one JSON document (the whole text, surrounding whitespace allowed)."""
    start = len(text) - len(text.lstrip())
    try:
        value, end = _scan_json(text, start)
    except StopIteration as stop:
        raise ValueError(f"not valid JSON at character {stop.value}") from None
    if text[end:].strip():
        raise ValueError(f"extra data after the JSON document at character {end}")
    return value


def to_json(value: object) -> str:
    """Compact, pure-ASCII JSON for the result's types (str, int, bool, None, dict, list)."""
    if isinstance(value, str):
        return quote_json(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(quote_json(k) + ":" + to_json(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(item) for item in value) + "]"
    raise TypeError(f"cannot serialise {type(value).__name__}")


# --- prctl through _ctypes (importing ctypes costs ~4 ms) -------------------------------------


class _CInt(_ctypes._SimpleCData):
    _type_ = "i"


class _Libc:
    _handle = _ctypes.dlopen(None)


class _CFunction(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _CInt


_prctl = _CFunction(("prctl", _Libc))
# System V IPC objects outlive their creator: between test cases they are removed (see reset_sandbox).
_IPC_RMID = 0
_REMOVERS = {"shm": _CFunction(("shmctl", _Libc)), "msg": _CFunction(("msgctl", _Libc)),
             "sem": _CFunction(("semctl", _Libc))}


def prctl(option: int, value: int) -> bool:
    """Call prctl(2); True when the kernel accepted it."""
    return _prctl(option, value, 0, 0, 0) == 0


# --- the spec -----------------------------------------------------------------------------------

SPEC_FIELDS = {"command", "workdir", "files", "stdin", "timeout_seconds", "max_memory_mb",
               "max_processes", "env", "limits", "compile", "cpu_time_seconds", "max_file_size_mb",
               "tests", "deadline_seconds", "scratch_paths"}
MAX_TESTS = 1000
COMPILE_FIELDS = {"command", "timeout_seconds"}


def _positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SpecError(f"spec: '{name}' must be an integer >= {minimum}")
    return value


def _optional_positive_int(spec: dict, name: str) -> "int | None":
    value = spec.get(name)
    return None if value is None else _positive_int(value, name)


def _seconds(value: object, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1e9:
        raise SpecError(f"spec: '{name}' must be a positive number")
    return value


def _string_list(value: object, name: str) -> list:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise SpecError(f"spec: '{name}' must be a non-empty list of strings")
    if any("\0" in v for v in value):
        raise SpecError(f"spec: '{name}' must not contain NUL characters")
    return value


def _utf8(text: str, name: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise SpecError(f"spec: '{name}' is not valid Unicode (lone surrogate)") from None


def check_spec(spec: object) -> dict:
    """The validated spec with defaults filled in; SpecError names the first fault."""
    if not isinstance(spec, dict):
        raise SpecError("spec: must be a JSON object")
    unknown = sorted(set(spec) - SPEC_FIELDS)
    if unknown:
        raise SpecError(f"spec: unknown field '{unknown[0]}'")
    for name in ("command", "workdir", "timeout_seconds"):
        if name not in spec:
            raise SpecError(f"spec: the field '{name}' is required")
    workdir = spec["workdir"]
    if not isinstance(workdir, str) or not workdir.startswith("/") or "\0" in workdir:
        raise SpecError("spec: 'workdir' must be an absolute path")
    compile_stage = spec.get("compile")
    if compile_stage is not None:
        if not isinstance(compile_stage, dict) or set(compile_stage) != COMPILE_FIELDS:
            raise SpecError("spec: 'compile' must be an object {command, timeout_seconds}")
        compile_stage = {"command": _string_list(compile_stage["command"], "compile.command"),
                         "timeout_seconds": _seconds(compile_stage["timeout_seconds"], "compile.timeout_seconds")}
    stdin = spec.get("stdin")
    if stdin is not None and not isinstance(stdin, str):
        raise SpecError("spec: 'stdin' must be a string or null")
    stdin = _utf8(stdin or "", "stdin")
    tests = spec.get("tests")
    if tests is not None:
        if not isinstance(tests, list) or not 0 < len(tests) <= MAX_TESTS or not all(
                isinstance(test, dict) and set(test) == {"stdin"} and isinstance(test["stdin"], str) for test in tests):
            raise SpecError(f"spec: 'tests' must be a list of 1 to {MAX_TESTS} objects {{stdin}}")
        tests = [_utf8(test["stdin"], f"tests[{index}].stdin") for index, test in enumerate(tests)]
    scratch = [] if spec.get("scratch_paths") is None else spec["scratch_paths"]
    if not isinstance(scratch, list) or not all(isinstance(path, str) and path.startswith("/") for path in scratch):
        raise SpecError("spec: 'scratch_paths' must be a list of absolute paths")
    env = {} if spec.get("env") is None else spec["env"]
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise SpecError("spec: 'env' must be an object of strings")
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise SpecError(f"spec: 'env' has an invalid variable name or value: {key!r}")
    files = [] if spec.get("files") is None else spec["files"]
    if not isinstance(files, list):
        raise SpecError("spec: 'files' must be a list of {path, content, encoding}")
    limits = {} if spec.get("limits") is None else spec["limits"]
    if not isinstance(limits, dict) or set(limits) - set(DEFAULT_LIMITS):
        raise SpecError(f"spec: 'limits' may only have the fields {', '.join(DEFAULT_LIMITS)}")
    limits = {**DEFAULT_LIMITS, **limits}
    file_size_mb = _optional_positive_int(spec, "max_file_size_mb")
    if file_size_mb:
        limits["file_bytes"] = file_size_mb * MIB
    for name, value in limits.items():
        minimum = MIN_RESULT_BYTES if name == "result_bytes" else 0
        _positive_int(value, f"limits.{name}", minimum=minimum)
    return {
        "command": _string_list(spec["command"], "command"),
        "compile": compile_stage,
        "workdir": workdir,
        "files": files,
        "stdin": stdin,
        "timeout_seconds": _seconds(spec["timeout_seconds"], "timeout_seconds"),
        "tests": tests,
        "deadline_seconds": None if spec.get("deadline_seconds") is None
        else _seconds(spec["deadline_seconds"], "deadline_seconds"),
        "scratch_paths": scratch,
        "cpu_time_seconds": _optional_positive_int(spec, "cpu_time_seconds"),
        "max_memory_mb": _optional_positive_int(spec, "max_memory_mb"),
        "max_processes": _optional_positive_int(spec, "max_processes"),
        "env": env,
        "limits": limits,
    }


USAGE = ("usage: runner.py [--isolation-wait SECONDS] [--remove-spec] SPEC_PATH  "
         "(SPEC_PATH '-': the spec on stdin)")


def parse_arguments(argv: list) -> tuple:
    """(isolation wait in seconds or None, remove the spec file once read?, spec path) from the command line.

    A malformed wait is a GateError, so a caller that asked for the gate never runs code without it."""
    arguments = argv[1:]
    wait_seconds = None
    remove_spec = "--remove-spec" in arguments[:-1]
    if remove_spec:
        arguments.remove("--remove-spec")
    if len(arguments) == 3 and arguments[0] == "--isolation-wait":
        try:
            wait_seconds = float(arguments[1])
            usable = 0 < wait_seconds < 1e9  # nan and inf fail this too
        except ValueError:
            usable = False
        if not usable:
            raise GateError(f"--isolation-wait must be a positive number of seconds, got {arguments[1]!r}")
        arguments = arguments[2:]
    if len(arguments) != 1:
        raise SpecError(USAGE)
    return wait_seconds, remove_spec, arguments[0]


def load_spec(spec_path: str, remove: bool = False) -> dict:
    """Read, parse and check the spec at spec_path ("-": stdin). With `remove` the file is deleted once
    read, before anything runs: the program must not read what else the spec holds (other test cases'
    inputs); a spec that cannot be deleted is not run. A gzip-compressed spec (how a pod gets it) is
    decompressed."""
    try:
        if spec_path == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(spec_path, "rb") as spec_file:
                raw = spec_file.read()
    except OSError as error:
        raise SpecError(f"cannot read the spec: {error.strerror}: {spec_path}") from None
    if remove:
        try:
            os.unlink(spec_path)
        except OSError as error:
            raise SpecError(f"cannot remove the spec once read: {error.strerror}: {spec_path}") from None
    try:
        if raw[:2] == GZIP_MAGIC:
            raw = zlib.decompress(raw, wbits=31)
        return check_spec(parse_json(raw.decode("utf-8")))
    except zlib.error as error:
        raise SpecError(f"spec: not valid gzip data: {error}") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise SpecError(f"spec: not valid UTF-8 JSON: {error}") from None


# --- input files ---------------------------------------------------------------------------------

OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
BASE64_ALPHABET = dict.fromkeys(map(ord, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n"))


def split_relative_path(path: object) -> list:
    """The components of a normalised relative path; SpecError for anything else."""
    if not isinstance(path, str) or not path:
        raise SpecError("files: every file needs a non-empty string 'path'")
    if "\0" in path:
        raise SpecError(f"files: {path!r}: NUL characters are not allowed in paths")
    if path.startswith("/"):
        raise SpecError(f"files: {path!r}: the path must be relative to the work directory")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise SpecError(f"files: {path!r}: the path must be normalised (no '..', '.' or empty parts)")
    return parts


def decode_file(entry: object) -> tuple:
    """(path, bytes) of one spec file entry."""
    if not isinstance(entry, dict) or set(entry) - {"path", "content", "encoding"}:
        raise SpecError("files: every entry must be an object {path, content, encoding}")
    path, content = entry.get("path"), entry.get("content")
    encoding = entry.get("encoding") or "utf-8"
    split_relative_path(path)
    if not isinstance(content, str):
        raise SpecError(f"files: {path!r}: 'content' must be a string")
    if encoding == "utf-8":
        return path, _utf8(content, f"files: {path}")
    if encoding == "base64":
        if content.translate(BASE64_ALPHABET):  # a2b_base64 would silently skip stray characters
            raise SpecError(f"files: {path!r}: 'content' is not valid base64")
        try:
            return path, binascii.a2b_base64(content.encode("ascii"))
        except (UnicodeEncodeError, binascii.Error):
            raise SpecError(f"files: {path!r}: 'content' is not valid base64") from None
    raise SpecError(f"files: {path!r}: 'encoding' must be 'utf-8' or 'base64'")


def materialise_files(workdir_fd: int, files: list) -> dict:
    """Write the input files under the work directory; returns {path: bytes}.

    Every component is opened relative to its parent with O_NOFOLLOW and every file is created
    with O_EXCL, so nothing is written through a link, whoever planted it.
    """
    written = {}
    for entry in files:
        path, content = decode_file(entry)
        parts = split_relative_path(path)
        dir_fd = workdir_fd
        try:
            for index, part in enumerate(parts[:-1]):
                try:
                    os.mkdir(part, 0o755, dir_fd=dir_fd)
                except FileExistsError:
                    pass
                try:
                    next_fd = os.open(part, OPEN_DIR, dir_fd=dir_fd)
                except OSError:
                    parent = "/".join(parts[: index + 1])
                    raise SpecError(f"files: {path!r}: {parent!r} is a link or a file, not a directory") from None
                if dir_fd != workdir_fd:
                    os.close(dir_fd)
                dir_fd = next_fd
            try:
                file_fd = os.open(parts[-1], CREATE_FILE, 0o644, dir_fd=dir_fd)
            except FileExistsError:
                raise SpecError(f"files: {path!r}: given twice, or something already exists there") from None
            with open(file_fd, "wb") as handle:
                handle.write(content)
        except OSError as error:  # no space left, name too long, ...
            raise SpecError(f"files: {path!r}: cannot write it: {error.strerror}") from None
        finally:
            if dir_fd != workdir_fd:
                os.close(dir_fd)
        written[path] = content
    return written


# --- running the program ---------------------------------------------------------------------------


class StartError(Exception):
    """The program could not be started; the message is the result's reason."""


class CappedOutput:
    """One of the program's output pipes: keeps the first `cap` bytes, reads and drops the rest."""

    def __init__(self, fd: int, cap: int):
        self.fd, self.cap = fd, cap
        self.data = bytearray()
        self.truncated = False

    def read(self) -> bool:
        """Read what is there; False at end of file."""
        chunk = os.read(self.fd, READ_CHUNK)
        if not chunk:
            return False
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[:room]
        self.data += chunk
        return True


def set_every_signal(disposition: object) -> None:
    """Give every catchable signal the same disposition (SIG_IGN or SIG_DFL)."""
    for signum in CATCHABLE_SIGNALS:
        try:
            _signal.signal(signum, disposition)
        except (OSError, ValueError):
            pass  # reserved by the C library (glibc keeps 32 and 33 for its threads)


def _lower_rlimit(resource: object, which: int, limit: int) -> None:
    """Set both soft and hard limits to `limit`, or to the hard limit when that is already lower."""
    hard = resource.getrlimit(which)[1]
    limit = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(which, (limit, limit))


def _exec_child(stage: dict, spec: dict, workdir_fd: int, stdio: tuple, report_fd: int) -> None:
    """In the forked child: become the program, or report why not on report_fd. Never returns."""
    step = "prepare"
    try:
        os.setsid()  # own session and process group, so the whole group can be killed
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        os.fchdir(workdir_fd)
        # Nothing of the runner's leaks: not its stdout (the result channel), not inherited fds.
        os.closerange(3, report_fd)
        os.closerange(report_fd + 1, os.sysconf("SC_OPEN_MAX"))
        _signal.set_wakeup_fd(-1)
        # The runner ignores every signal (see prepare_runner); ignored dispositions survive exec.
        set_every_signal(_signal.SIG_DFL)
        import resource

        _lower_rlimit(resource, resource.RLIMIT_FSIZE, spec["limits"]["file_bytes"])
        # No POSIX message queues: they would outlive the program (and carry one test's input to the next).
        _lower_rlimit(resource, resource.RLIMIT_MSGQUEUE, 0)
        if spec["max_processes"]:
            _lower_rlimit(resource, resource.RLIMIT_NPROC, spec["max_processes"])
        if stage["cpu_time_seconds"]:
            # SIGXCPU at the limit, SIGKILL a second later should the program catch that.
            seconds = stage["cpu_time_seconds"]
            resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
        # The runner is non-dumpable, which makes /proc/self root-owned; undo that for the program
        # so it may raise its own oom_score_adj (execve would make it dumpable again anyway).
        prctl(PR_SET_DUMPABLE, 1)
        try:
            with open("/proc/self/oom_score_adj", "w") as oom_score:
                oom_score.write("1000")  # the program, not the runner, is the OOM killer's victim
        except OSError:
            pass  # no /proc here: the runner's stdout and result are then less protected
        step = "exec"
        os.execvpe(stage["command"][0], stage["command"], spec["env"])
    except BaseException as error:
        os.write(report_fd, f"{step}:{getattr(error, 'errno', None) or 0}".encode())
    finally:
        os._exit(127)


def start_program(stage: dict, spec: dict, workdir_fd: int) -> tuple:
    """Fork and exec the stage's command; (pid, stdin fd, stdout fd, stderr fd) or StartError."""
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    report_r, report_w = os.pipe()  # close-on-exec: end of file without a message means exec worked
    pid = os.fork()
    if pid == 0:
        _exec_child(stage, spec, workdir_fd, (stdin_r, stdout_w, stderr_w), report_w)
    for fd in (stdin_r, stdout_w, stderr_w, report_w):
        os.close(fd)
    with open(report_r, "rb") as report:
        failure = report.read()
    if not failure:
        return pid, stdin_w, stdout_r, stderr_r
    os.waitpid(pid, 0)
    for fd in (stdin_w, stdout_r, stderr_r):
        os.close(fd)
    step, errno = failure.decode().split(":")
    cause = "not found" if int(errno) == 2 else os.strerror(int(errno)).lower()
    if step == "exec":
        raise StartError(f"cannot start {stage['command'][0]!r}: {cause}")
    raise StartError(f"cannot prepare the program's process: {cause}")


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except OSError:
        pass  # the group is already empty


def supervise(pid: int, stdin_fd: int, stdin_data: bytes, outputs: list, wake_fd: int,
              deadline: float) -> tuple:
    """Feed stdin, capture output and enforce the deadline until the program exits.

    Returns (wait status, resource usage, timed out, monotonic time of exit). A SIGCHLD handler
    writes to wake_fd, so the program's exit wakes the poll at once.
    """
    poller = select.poll()
    by_fd = {output.fd: output for output in outputs}
    for fd in (*by_fd, wake_fd):
        poller.register(fd, select.POLLIN)
    os.set_blocking(stdin_fd, False)
    poller.register(stdin_fd, select.POLLOUT)
    sent, timed_out = 0, False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        now = time.monotonic()
        if now >= deadline:
            # SIGTERM first so the program may flush; SIGKILL when the grace is over (and again
            # every 100 ms in case the group has new members).
            _signal_group(pid, _signal.SIGKILL if timed_out else _signal.SIGTERM)
            deadline = now + (0.1 if timed_out else GRACE_SECONDS)
            timed_out = True
            continue
        for fd, _ in poller.poll(max(1, int((deadline - now) * 1000) + 1)):
            if fd == wake_fd:
                os.read(wake_fd, READ_CHUNK)
            elif fd == stdin_fd:
                try:
                    sent += os.write(stdin_fd, stdin_data[sent : sent + READ_CHUNK])
                    finished = sent >= len(stdin_data)
                except BlockingIOError:
                    finished = False
                except OSError:  # the program closed its stdin: the rest is not wanted
                    finished = True
                if finished:
                    poller.unregister(stdin_fd)
                    os.close(stdin_fd)
                    stdin_fd = -1
            elif not by_fd[fd].read():
                poller.unregister(fd)
    ended = time.monotonic()
    if stdin_fd >= 0:
        os.close(stdin_fd)
    return status, usage, timed_out, ended


def drain(outputs: list, deadline: float) -> None:
    """Read the pipes to end of file once every writer is gone (bounded by deadline)."""
    poller = select.poll()
    open_fds = {output.fd: output for output in outputs}
    for fd in open_fds:
        poller.register(fd, select.POLLIN)
    while open_fds and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            if not open_fds[fd].read():
                poller.unregister(fd)
                del open_fds[fd]


def _reap_children() -> bool:
    """Reap every exited child; True while living children remain."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def find_descendants() -> list:
    """Pids of every living descendant of the runner, from /proc."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat_file:
                fields = stat_file.read()
        except OSError:
            continue  # exited meanwhile
        ppid = int(fields[fields.rindex(b")") + 2 :].split(None, 2)[1])
        children.setdefault(ppid, []).append(int(name))
    found, pending = [], [os.getpid()]
    while pending:
        for child in children.get(pending.pop(), ()):
            found.append(child)
            pending.append(child)
    return found


def kill_leftovers(pgid: int, deadline: float) -> bool:
    """SIGKILL everything the program started, setsid daemons included; True when none is left.

    The runner is a child subreaper, so every orphan becomes its child: when it has no children
    left, nothing the program started is alive. The common case (no leftovers) costs one waitpid.
    """
    _signal_group(pgid, _signal.SIGKILL)
    while _reap_children():
        if time.monotonic() > deadline:
            return False
        # A pid is killed moments after /proc listed it as a descendant; for it to name an
        # unrelated process meanwhile, the pid space would have to wrap around in between.
        for pid in find_descendants():
            try:
                os.kill(pid, _signal.SIGKILL)
            except OSError:
                pass  # already gone
        time.sleep(0.005)
    return True


# --- memory --------------------------------------------------------------------------------------


class MemoryCgroup:
    """The runner's memory cgroup (v1 or v2), when one can be read.

    It must hold only the runner and the program (a pod's container, or the fresh cgroup the
    local backend makes), or the numbers include the neighbours.
    """

    def __init__(self, directory: str, version: int):
        self.directory, self.version = directory, version

    @classmethod
    def find(cls) -> "MemoryCgroup | None":
        try:
            with open("/proc/self/cgroup") as membership:
                lines = membership.read().splitlines()
        except OSError:
            return None
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(",") and path != "/":
                # Seen from the host the cgroup is under the mount point; inside a container
                # (cgroup v1 without a cgroup namespace) the mount point is the cgroup itself.
                for directory in ("/sys/fs/cgroup/memory" + path, "/sys/fs/cgroup/memory"):
                    if os.path.exists(directory + "/memory.max_usage_in_bytes"):
                        return cls(directory, 1)
            if controllers == "":
                directory = "/sys/fs/cgroup" + (path if path != "/" else "")
                if os.path.exists(directory + "/memory.peak"):
                    return cls(directory, 2)
        return None

    def _read(self, name: str) -> str:
        with open(f"{self.directory}/{name}") as control:
            return control.read()

    def reset_peak(self) -> bool:
        """Start the peak afresh where the kernel allows it (cgroup v1, writable), so a reused
        cgroup reports this run's peak; False where it cannot (the peak then covers earlier stages)."""
        if self.version == 1:
            try:
                with open(self.directory + "/memory.max_usage_in_bytes", "w") as control:
                    control.write("0")
                return True
            except OSError:
                pass
        return False

    def usage_bytes(self) -> int:
        return int(self._read("memory.usage_in_bytes" if self.version == 1 else "memory.current"))

    def peak_bytes(self) -> int:
        return int(self._read("memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"))

    def oom_kills(self) -> int:
        """The cgroup's count of OOM kills (0 where the kernel does not count them)."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in self._read(name).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0


def children_peak_rss_bytes() -> int:
    """Peak resident memory of the largest reaped child (includes its pre-exec copy of the runner)."""
    import resource  # only needed without a cgroup

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


# --- output files ------------------------------------------------------------------------------------


class OutputCollector:
    """Collects regular files created or changed under the work directory, within the caps.

    Directories are opened relative to their parent with O_NOFOLLOW and files with
    O_NOFOLLOW|O_NONBLOCK then fstat-checked, so links are never followed and fifos never block.
    """

    def __init__(self, inputs: dict, limits: dict, baseline: "dict | None" = None):
        self.inputs, self.limits = inputs, limits
        # Files as the compile stage left them, {path: (inode, size, mtime)}: unchanged, they are not outputs.
        self.baseline = baseline or {}
        self.files = {}
        self.truncated = False
        self.total_bytes = 0
        self.scanned = 0
        self.largest = 0  # bytes of the largest regular file seen: did one reach the file-size limit?

    def collect(self, dir_fd: int, prefix: str = "", depth: int = 0) -> None:
        with os.scandir(dir_fd) as scan:
            entries = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in scan)
        for name, is_dir in entries:
            self.scanned += 1
            path = prefix + name
            if self.scanned > MAX_SCANNED_ENTRIES or depth >= MAX_DEPTH or not is_printable_name(name):
                self.truncated = True
                continue
            if is_dir:
                try:
                    sub_fd = os.open(name, OPEN_DIR, dir_fd=dir_fd)
                except OSError:
                    continue
                try:
                    self.collect(sub_fd, path + "/", depth + 1)
                finally:
                    os.close(sub_fd)
            else:
                self._consider_file(dir_fd, name, path)

    def _consider_file(self, dir_fd: int, name: str, path: str) -> None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                         dir_fd=dir_fd)
        except OSError:
            return  # a link (ELOOP), or unreadable
        with open(fd, "rb") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return  # fifo, socket, device
            size = info.st_size
            self.largest = max(self.largest, size)
            if self.baseline.get(path) == (info.st_ino, size, info.st_mtime_ns):
                return  # left by the compile stage and untouched since
            original = self.inputs.get(path)
            if original is not None and len(original) == size and handle.read(size) == original:
                return  # an unchanged input
            limits = self.limits
            if (len(self.files) >= limits["output_files"] or size > limits["output_file_bytes"]
                    or self.total_bytes + size > limits["output_files_bytes"]):
                self.truncated = True
                return
            handle.seek(0)
            data = handle.read(size)
        self.total_bytes += len(data)
        try:
            self.files[path] = data.decode("utf-8")
        except UnicodeDecodeError:
            self.files[path] = {"content": binascii.b2a_base64(data, newline=False).decode("ascii"),
                                "encoding": "base64"}


class Snapshot(OutputCollector):
    """The work directory's regular files after the compile stage, as OutputCollector's baseline."""

    def __init__(self):
        super().__init__({}, DEFAULT_LIMITS)

    def _consider_file(self, dir_fd: int, name: str, path: str) -> None:
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return
        if stat.S_ISREG(info.st_mode):
            self.files[path] = (info.st_ino, info.st_size, info.st_mtime_ns)


# C0 controls, DEL and C1 controls: a name holding one would drive the terminal that shows it.
CONTROL_CHARACTERS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)])


def is_printable_name(name: str) -> bool:
    """Whether a file name can be returned: valid UTF-8 and no control characters."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in the name came back as lone surrogates
        return False
    return name.translate(CONTROL_CHARACTERS) == name


# --- the result ------------------------------------------------------------------------------------


# What `limit_exceeded` names: the limit that ended the run (or, for file_size, that a write hit).
WALL_TIME, CPU_TIME, MEMORY, FILE_SIZE = "wall_time", "cpu_time", "memory", "file_size"
# The compile stage's part of the result.
COMPILE_FIELDS_REPORTED = ("exit_code", "signal", "stdout", "stderr", "stdout_truncated", "stderr_truncated",
                           "duration_ms")


def empty_result(status: str, reason: "str | None") -> dict:
    return {
        "status": status, "reason": reason, "exit_code": None, "signal": None, "oom_killed": False,
        "stdout": "", "stderr": "", "stdout_truncated": False, "stderr_truncated": False,
        "duration_ms": 0, "memory_used_mb": None, "output_files": {}, "output_files_truncated": False,
        "cpu_time_ms": None, "limit_exceeded": None, "compile": None, "tests": None,
    }


def classify(result: dict, wait_status: int, timed_out: bool, stage: dict, spec: dict) -> None:
    """Fill status, reason, exit_code, signal and limit_exceeded from how the stage's process ended."""
    if os.WIFSIGNALED(wait_status):
        signum = os.WTERMSIG(wait_status)
        result["exit_code"] = 128 + signum
        result["signal"] = SIGNAL_NAMES.get(signum, f"signal {signum}")
    else:
        signum = None
        result["exit_code"] = os.WEXITSTATUS(wait_status)
    cpu_limit, memory_limit = stage["cpu_time_seconds"], spec["max_memory_mb"]
    cpu_spent = cpu_limit and (signum == _signal.SIGXCPU or (
        signum == _signal.SIGKILL and result["cpu_time_ms"] >= cpu_limit * 1000))
    if timed_out:
        result["status"], result["reason"] = "timeout", f"wall-clock limit of {stage['timeout_seconds']:g} s exceeded"
        result["limit_exceeded"] = WALL_TIME
    elif cpu_spent:
        result["status"], result["reason"] = "timeout", f"CPU-time limit of {cpu_limit} s exceeded"
        result["limit_exceeded"] = CPU_TIME
    elif result["exit_code"] == 0:
        result["status"] = "completed"
    elif result["oom_killed"]:
        limit = f"exceeded {memory_limit} MB" if memory_limit else "killed by the kernel's OOM killer"
        result["status"], result["reason"] = "error_runtime", f"out of memory: {limit}"
        result["limit_exceeded"] = MEMORY
    elif signum == _signal.SIGXFSZ:
        result["status"], result["reason"] = "error_runtime", f"file-size limit of {file_size_mb(spec)} exceeded"
        result["limit_exceeded"] = FILE_SIZE
    elif result["signal"]:
        result["status"], result["reason"] = "error_runtime", f"killed by signal {result['signal']}"
    else:
        result["status"], result["reason"] = "error_runtime", f"exited with code {result['exit_code']}"


def file_size_mb(spec: dict) -> str:
    return f"{spec['limits']['file_bytes'] / MIB:g} MB"


def note_file_size_hit(result: dict, spec: dict, largest: int) -> None:
    """A program that got EFBIG (Python ignores SIGXFSZ) and left a file at the limit hit it too."""
    if result["limit_exceeded"] is None and largest >= spec["limits"]["file_bytes"]:
        result["limit_exceeded"] = FILE_SIZE
        if result["reason"]:
            result["reason"] += f"; a file reached the file-size limit of {file_size_mb(spec)}"


def compile_failure(compiled: dict, stage: dict) -> dict:
    """The result of an execution whose compile stage did not succeed (the program never ran)."""
    if compiled["status"] == "error_setup":  # the compiler could not be started
        return compiled
    if compiled["limit_exceeded"] == WALL_TIME:
        reason = f"compilation exceeded its wall-clock limit of {stage['timeout_seconds']:g} s"
    elif compiled["limit_exceeded"] == MEMORY:
        reason = "compilation ran out of memory"
    else:
        reason = f"compilation failed: {compiled['reason']}"
    result = empty_result("error_compile", reason)
    result["compile"] = compile_summary(compiled)
    return result


def compile_summary(compiled: dict) -> dict:
    return {name: compiled[name] for name in COMPILE_FIELDS_REPORTED}


def longest_prefix(text: str, fits: object) -> str:
    """The longest prefix of `text` for which `fits(prefix)` holds (it must hold for the empty string).

    A binary search: `fits` must hold for every prefix shorter than one for which it holds."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(text[:middle]):
            low = middle
        else:
            high = middle - 1
    return text[:low]


def serialise_within(result: dict, budget: int) -> str:
    """The result as JSON of at most `budget` bytes: output files dropped (largest first), then
    the longest of the streams (stdout, stderr, and the compiler's) shortened, then the next, each
    flagged as truncated."""
    files = result["output_files"]
    sizes = {path: len(quote_json(path)) + len(to_json(value)) + 2 for path, value in files.items()}
    document = to_json(result)
    for path in sorted(sizes, key=sizes.get, reverse=True):
        if len(document) <= budget:
            return document
        del files[path]
        result["output_files_truncated"] = True
        document = to_json(result)
    # The streams, longest first: the program's, and the compiler's when it ran.
    parts = (result, result["compile"], *(result["tests"] or ()))
    streams = [(part, name) for part in parts if part for name in ("stderr", "stdout")]
    for part, stream in sorted(streams, key=lambda item: len(item[0][item[1]]), reverse=True):
        if len(document) <= budget:
            return document
        part[stream + "_truncated"] = True
        excess = len(to_json(result)) - budget
        room = max(2, len(quote_json(part[stream])) - excess)
        part[stream] = longest_prefix(part[stream], lambda prefix: len(quote_json(prefix)) <= room)
        document = to_json(result)
    if len(document) > budget:  # only a reason longer than MIN_RESULT_BYTES could get here
        result["reason"] = result["reason"][:200]
        document = to_json(result)
    return document


# --- the isolation gate (a pod's runner, before anything of the program) ------------------------
#
# NetworkPolicy enforcers program a new pod's rules a moment after it starts (kube-router: about a
# second), so untrusted code must not start before then. With --isolation-wait the runner first
# probes two destinations known to listen for every running pod: the API server's Service
# (KUBERNETES_SERVICE_HOST/PORT, which the kubelet gives every pod) and the kubelet of the pod's own
# node (SANDBOX_NODE_IP, the downward API's status.hostIP, port SANDBOX_KUBELET_PORT). Each attempt
# is classified:
#
# - connected: the network is open;
# - refused by a TCP reset: the destination's host answered, so the path to it is open too (this is
#   what a closed port looks like; it never counts as evidence of a policy);
# - blocked: refused by an ICMP destination-unreachable that the kernel reports on the socket's error
#   queue (a REJECT rule: kube-router's policies, and the kernel's ICMP rate limit turns further
#   rejects into drops), or no answer within the attempt's timeout (a DROP rule: Calico, Cilium);
# - anything else (no route, a local error): ambiguous.
#
# The rule: the program starts only after GATE_ROUNDS_REQUIRED consecutive rounds in which BOTH
# destinations were blocked. An open network cannot produce that: a listening destination connects,
# and a destination that happens to be down (a closed port) answers with a reset, which breaks the
# streak. It would take the API server's Service having no endpoints (kube-proxy then rejects with
# ICMP) at the same time as a host firewall rejecting or dropping the kubelet's port, for every
# round. A missing or malformed variable, or an enforcer that rejects with TCP resets, never lets the
# code run: after the wait the runner gives up with `error_setup` and a reason naming the last answers.
#
# socket, selectors, struct and ipaddress (and the enum they pull in) are imported inside the
# functions below: only a gated run pays for them, never the local backend's start-up.

GATE_ROUNDS_REQUIRED = 3
GATE_ATTEMPT_TIMEOUT_SECONDS = 0.5
GATE_ROUND_INTERVAL_SECONDS = 0.1
BLOCKED = "blocked"


class GateError(Exception):
    """The network was not shown to be cut off, so the program must not run; the message says why."""


def _recverr(socket: object, family: int) -> tuple:
    """The socket level and option that queue ICMP errors, their origin code, and the ICMP type
    "destination unreachable" of an address family (<linux/errqueue.h>, <linux/in.h>, <linux/in6.h>)."""
    if family == socket.AF_INET6:
        return socket.IPPROTO_IPV6, 25, 3, 1  # IPV6_RECVERR, SO_EE_ORIGIN_ICMP6, ICMPV6_DEST_UNREACH
    return socket.IPPROTO_IP, 11, 2, 3  # IP_RECVERR, SO_EE_ORIGIN_ICMP, ICMP_DEST_UNREACH


def gate_destinations(env: dict) -> list:
    """(family, host, port) of the API server's Service and the node's kubelet, from the environment."""
    import ipaddress
    import socket

    found = []
    for host_name, port_name in (("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"),
                                 ("SANDBOX_NODE_IP", "SANDBOX_KUBELET_PORT")):
        host, port = env.get(host_name, ""), env.get(port_name, "")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise GateError(f"{host_name} must be an IP address, got {host!r}") from None
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise GateError(f"{port_name} must be a port number, got {port!r}")
        found.append((socket.AF_INET6 if address.version == 6 else socket.AF_INET, host, int(port)))
    return found


def _refusal(sock: object, family: int, error: int) -> str:
    """`blocked` when the connect error came as an ICMP destination-unreachable, else its name."""
    import socket
    import struct

    _level, _option, icmp_origin, unreachable = _recverr(socket, family)
    try:
        _data, ancillary, _flags, _address = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)
    except BlockingIOError:  # nothing queued: the destination's host itself answered (a reset)
        return os.strerror(error) + " (reset)"
    for _level, _type, data in ancillary:
        origin, icmp_type = struct.unpack_from("=4xBB", data)  # struct sock_extended_err
        if origin == icmp_origin and icmp_type == unreachable:
            return BLOCKED
    return os.strerror(error)


def probe(targets: list, timeout: float = GATE_ATTEMPT_TIMEOUT_SECONDS) -> list:
    """Connect to every target at once; one answer per target: `connected`, `blocked` or an error."""
    import errno
    import selectors
    import socket

    answers = ["no answer"] * len(targets)
    selector = selectors.DefaultSelector()
    sockets = []
    try:
        for index, (family, host, port) in enumerate(targets):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            level, option, _origin, _type = _recverr(socket, family)
            sock.setsockopt(level, option, 1)
            sock.setblocking(False)
            error = sock.connect_ex((host, port))
            if error in (0, errno.EINPROGRESS):
                selector.register(sock, selectors.EVENT_WRITE, index)
            else:
                answers[index] = _refusal(sock, family, error)
        deadline = time.monotonic() + timeout
        while selector.get_map() and time.monotonic() < deadline:
            for key, _events in selector.select(max(deadline - time.monotonic(), 0)):
                selector.unregister(key.fileobj)
                error = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                family = targets[key.data][0]
                answers[key.data] = "connected" if error == 0 else _refusal(key.fileobj, family, error)
        for key in selector.get_map().values():
            answers[key.data] = BLOCKED  # no answer in time: dropped
    finally:
        selector.close()
        for sock in sockets:
            sock.close()
    return answers


def wait_until_isolated(env: dict, wait_seconds: float) -> None:
    """Return once GATE_ROUNDS_REQUIRED consecutive rounds found both destinations blocked; GateError
    when that was not seen within wait_seconds, or cannot be checked at all."""
    try:
        targets = gate_destinations(env)
        deadline = time.monotonic() + wait_seconds
        streak = 0
        while True:
            answers = probe(targets)
            streak = streak + 1 if all(answer == BLOCKED for answer in answers) else 0
            if streak >= GATE_ROUNDS_REQUIRED:
                return
            if time.monotonic() >= deadline:
                seen = ", ".join(f"{host}:{port} {answer}" for (_family, host, port), answer in zip(targets, answers))
                raise GateError(f"the sandbox's network was not shown to be cut off within {wait_seconds:g} s "
                                f"(last answers: {seen}; is a NetworkPolicy enforcer running?)")
            time.sleep(GATE_ROUND_INTERVAL_SECONDS)
    except OSError as error:  # no socket at all, say: never evidence of isolation
        raise GateError(str(error)) from None


# --- the run ---------------------------------------------------------------------------------------


def record_usage(result: dict, spec: dict, cgroup: "MemoryCgroup | None", before: tuple, wait_status: int,
                 usage: object, timed_out: bool, peak_is_fresh: bool) -> None:
    """Fill memory_used_mb, oom_killed and cpu_time_ms; `before` is the cgroup's (usage, OOM kills) at the
    stage's start. Without a cgroup, or after an earlier stage when its peak could not be reset, the
    memory is the program's own peak resident set (wait4)."""
    if cgroup and peak_is_fresh:
        peak = cgroup.peak_bytes() - before[0]
    elif peak_is_fresh:
        peak = children_peak_rss_bytes()  # orphans the runner reaped included
    else:
        peak = usage.ru_maxrss * 1024
    result["memory_used_mb"] = max(0, peak + MIB - 1) // MIB
    result["cpu_time_ms"] = round((usage.ru_utime + usage.ru_stime) * 1000)
    # The kernel's OOM-kill counter is the evidence; where it is missing (or the kill was counted
    # elsewhere), a SIGKILL with the peak near the granted memory is taken as the OOM killer.
    limit = spec["max_memory_mb"]
    killed_near_limit = bool(
        limit and not timed_out and os.WIFSIGNALED(wait_status)
        and os.WTERMSIG(wait_status) == _signal.SIGKILL and result["memory_used_mb"] >= 0.9 * limit)
    result["oom_killed"] = killed_near_limit or bool(cgroup and cgroup.oom_kills() > before[1])


def run_stage(spec: dict, stage: dict, workdir_fd: int, wake_fd: int, cgroup: "MemoryCgroup | None",
              peak_is_fresh: bool, digest: bool = False) -> dict:
    """Start, supervise and measure one stage (the compiler, or the program); its result without
    output files. `stage`: {command, stdin, timeout_seconds, cpu_time_seconds}. With `digest`, the
    result has the digests of the whole stdout (stdout_sha256; None when it was cut at its cap)."""
    limits = spec["limits"]
    before = (cgroup.usage_bytes(), cgroup.oom_kills()) if cgroup else (0, 0)
    started = time.monotonic()
    try:
        pid, stdin_fd, stdout_fd, stderr_fd = start_program(stage, spec, workdir_fd)
    except StartError as error:
        return empty_result("error_setup", str(error))
    outputs = [CappedOutput(stdout_fd, limits["stdout_bytes"]), CappedOutput(stderr_fd, limits["stderr_bytes"])]
    try:
        wait_status, usage, timed_out, ended = supervise(
            pid, stdin_fd, stage["stdin"], outputs, wake_fd, started + stage["timeout_seconds"])
    finally:
        # Whatever happened above, nothing the program started outlives the stage.
        if not kill_leftovers(pid, time.monotonic() + REAP_SECONDS):
            print("runner: some of the program's processes could not be killed", file=sys.stderr)
    drain(outputs, time.monotonic() + REAP_SECONDS)
    result = empty_result("completed", None)
    for name, output in zip(("stdout", "stderr"), outputs):
        os.close(output.fd)
        result[name] = output.data.decode("utf-8", "replace")
        result[name + "_truncated"] = output.truncated
    result["duration_ms"] = round((ended - started) * 1000)
    if digest:
        result["stdout_sha256"] = None if outputs[0].truncated else stdout_digests(bytes(outputs[0].data))
    record_usage(result, spec, cgroup, before, wait_status, usage, timed_out, peak_is_fresh)
    classify(result, wait_status, timed_out, stage, spec)
    return result


def run_once(spec: dict, workdir_fd: int, wake_fd: int, cgroup: "MemoryCgroup | None", peak_is_fresh: bool,
             inputs: dict, compiled: bool) -> dict:
    """Run the program once on the spec's stdin and collect its output files: neither the inputs nor
    what the compile stage left (unless the program changed them) are outputs."""
    baseline = None
    if compiled:
        snapshot = Snapshot()
        snapshot.collect(workdir_fd)
        baseline = snapshot.files
    stage = {"command": spec["command"], "stdin": spec["stdin"], "timeout_seconds": spec["timeout_seconds"],
             "cpu_time_seconds": spec["cpu_time_seconds"]}
    result = run_stage(spec, stage, workdir_fd, wake_fd, cgroup, peak_is_fresh)
    if result["exit_code"] is not None:  # the program ran
        collector = OutputCollector(inputs, spec["limits"], baseline)
        collector.collect(workdir_fd)
        result["output_files"], result["output_files_truncated"] = collector.files, collector.truncated
        note_file_size_hit(result, spec, collector.largest)
    return result


def run(spec: dict, wake_fd: int) -> dict:
    """Materialise the files, compile (when the language does), run the program, collect its output
    files: the result document."""
    try:
        os.makedirs(spec["workdir"], mode=0o755, exist_ok=True)
        # Held open for the whole run: the program cannot swap the directory for a link.
        workdir_fd = os.open(spec["workdir"], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise SpecError(f"cannot use the work directory {spec['workdir']!r}: {error.strerror}") from None
    try:
        inputs = materialise_files(workdir_fd, spec["files"])
        cgroup = MemoryCgroup.find()
        if cgroup:
            cgroup.reset_peak()
        peak_is_fresh = True  # the first stage: only the runner ran in the cgroup before it
        compiled = None
        started = time.monotonic()
        if spec["compile"]:
            stage = {**spec["compile"], "stdin": b"", "cpu_time_seconds": None}
            compiled = run_stage(spec, stage, workdir_fd, wake_fd, cgroup, peak_is_fresh)
            if compiled["status"] != "completed":
                return compile_failure(compiled, stage)
            peak_is_fresh = bool(cgroup and cgroup.reset_peak())
        if spec["tests"] is not None:
            result = run_tests(spec, workdir_fd, wake_fd, cgroup, peak_is_fresh, started)
        else:
            result = run_once(spec, workdir_fd, wake_fd, cgroup, peak_is_fresh, inputs, bool(compiled))
        if compiled:
            result["compile"] = compile_summary(compiled)
        return result
    finally:
        os.close(workdir_fd)


# --- test cases ------------------------------------------------------------------------------------
#
# Each test case runs in a fresh process, in the work directory as the compile stage left it, with
# the scratch paths (/tmp, /dev/shm, ...) emptied and System V IPC objects removed, so one test
# leaves nothing for the next: no test reads another's input. Expected outputs never reach the
# sandbox: the runner reports digests of each stdout, and the backend compares them outside.

# What the result reports of each test case (its name and verdict are added outside).
TEST_FIELDS = ("status", "reason", "exit_code", "signal", "oom_killed", "stdout", "stderr", "stdout_truncated",
               "stderr_truncated", "duration_ms", "memory_used_mb", "cpu_time_ms", "limit_exceeded", "stdout_sha256")


def without_trailing_whitespace(data: bytes) -> bytes:
    """The text without each line's trailing blanks and without trailing empty lines: what a judge's
    default comparison compares."""
    lines = [line.rstrip(b" \t\r\f\v") for line in data.split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    return b"\n".join(lines)


def stdout_digests(data: bytes) -> dict:
    import hashlib  # test cases only

    return {"exact": hashlib.sha256(data).hexdigest(),
            "trailing_whitespace": hashlib.sha256(without_trailing_whitespace(data)).hexdigest()}


def read_tree(dir_fd: int, depth: int = 0) -> list:
    """The directory's regular files and directories, [(name, mode, bytes or subtree)]; links, fifos
    and the like are left out."""
    entries = []
    with os.scandir(dir_fd) as scan:
        listing = sorted((entry.name, entry.is_dir(follow_symlinks=False), entry.is_file(follow_symlinks=False))
                         for entry in scan)
    for name, is_dir, is_file in listing:
        if depth >= MAX_DEPTH:
            break
        if is_dir:
            sub_fd = os.open(name, OPEN_DIR, dir_fd=dir_fd)
            try:
                entries.append((name, os.fstat(sub_fd).st_mode & 0o7777, read_tree(sub_fd, depth + 1)))
            finally:
                os.close(sub_fd)
        elif is_file:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
            with open(fd, "rb") as handle:
                entries.append((name, os.fstat(fd).st_mode & 0o7777, handle.read()))
    return entries


def write_tree(dir_fd: int, entries: list) -> None:
    for name, mode, content in entries:
        if isinstance(content, list):
            os.mkdir(name, 0o700, dir_fd=dir_fd)
            sub_fd = os.open(name, OPEN_DIR, dir_fd=dir_fd)
            try:
                write_tree(sub_fd, content)
                os.fchmod(sub_fd, mode)
            finally:
                os.close(sub_fd)
        else:
            with open(os.open(name, CREATE_FILE, 0o600, dir_fd=dir_fd), "wb") as handle:
                handle.write(content)
                os.fchmod(handle.fileno(), mode)


def empty_directory(dir_fd: int, depth: int = 0) -> None:
    """Remove everything in the directory. Only between test cases, when none of the program's
    processes is left to swap an entry for a link meanwhile."""
    info = os.fstat(dir_fd)
    if info.st_uid == os.geteuid() and info.st_mode & 0o700 != 0o700:
        os.fchmod(dir_fd, info.st_mode | 0o700)  # the program took our access to its own directory away
    with os.scandir(dir_fd) as scan:
        listing = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in scan]
    for name, is_dir in listing:
        if is_dir and depth < MAX_DEPTH:
            sub_fd = os.open(name, OPEN_DIR, dir_fd=dir_fd)
            try:
                empty_directory(sub_fd, depth + 1)
            finally:
                os.close(sub_fd)
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)


def remove_ipc_objects() -> None:
    """Remove the System V shared memory segments, message queues and semaphores of the sandbox's IPC
    namespace (they outlive the processes that made them)."""
    for kind, remove in _REMOVERS.items():
        try:
            with open(f"/proc/sysvipc/{kind}") as table:
                identifiers = [int(line.split()[1]) for line in table.read().splitlines()[1:]]
        except OSError:
            continue
        for identifier in identifiers:
            if kind == "sem":
                remove(identifier, 0, _IPC_RMID, 0)
            else:
                remove(identifier, _IPC_RMID, None)


def reset_sandbox(workdir_fd: int, saved: list, scratch_paths: list) -> None:
    """The work directory as the compile stage left it, the scratch paths empty, no IPC objects."""
    empty_directory(workdir_fd)
    write_tree(workdir_fd, saved)
    for path in scratch_paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                empty_directory(fd)
            else:
                os.truncate(path, 0)
        finally:
            os.close(fd)
    remove_ipc_objects()


def run_tests(spec: dict, workdir_fd: int, wake_fd: int, cgroup: "MemoryCgroup | None", peak_is_fresh: bool,
              started: float) -> dict:
    """Run the program once per test case within the execution's deadline (from `started`, before the
    compile stage); the cases past it are skipped."""
    saved = read_tree(workdir_fd)
    tests = spec["tests"]
    deadline = started + (spec["deadline_seconds"] or len(tests) * spec["timeout_seconds"])
    results, failure = [], None
    for index, stdin in enumerate(tests):
        remaining = deadline - time.monotonic()
        if failure is None and index:
            try:
                reset_sandbox(workdir_fd, saved, spec["scratch_paths"])
            except OSError as error:
                failure = f"cannot reset the sandbox for the next test: {error.strerror}: {error.filename}"
        if failure is not None or remaining <= 0:
            case = empty_result("error_setup" if failure else "skipped",
                                failure or "the execution's deadline passed before this test")
        else:
            stage = {"command": spec["command"], "stdin": stdin, "cpu_time_seconds": spec["cpu_time_seconds"],
                     "timeout_seconds": min(spec["timeout_seconds"], remaining)}
            case = run_stage(spec, stage, workdir_fd, wake_fd, cgroup, peak_is_fresh, digest=True)
            peak_is_fresh = False  # the next test's peak is its process's own (wait4)
            if case["limit_exceeded"] == WALL_TIME and stage["timeout_seconds"] < spec["timeout_seconds"]:
                case["reason"] = "the execution's deadline passed during this test"
        results.append({name: case.get(name) for name in TEST_FIELDS})
    skipped = sum(case["status"] == "skipped" for case in results)
    result = empty_result("timeout", f"the execution's deadline passed: {skipped} of {len(tests)} tests skipped") \
        if skipped else empty_result("completed", None)
    result["tests"] = results
    return result


def _wake_on_child(signum: int, frame: object) -> None:
    """SIGCHLD handler: its only job is the wake-up byte that set_wakeup_fd writes."""


def prepare_runner() -> tuple:
    """Process-wide set-up before anything else: returns the (read, write) wake-up pipe."""
    for fd in range(3):  # a closed standard descriptor would be reused by a pipe below
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)
    # The program runs with the runner's uid. It must not stop, interrupt or kill the runner:
    # every catchable signal is ignored (SIGCHLD excepted, its handler only wakes the poll). As
    # pid 1 of its pid namespace (bubblewrap --as-pid-1, a pod's container) the runner is also
    # immune to SIGKILL and SIGSTOP from inside the namespace, since it installs no handler for them.
    set_every_signal(_signal.SIG_IGN)
    # Same-uid code must not open /proc/<runner>/fd/1 and forge the result, nor ptrace the runner.
    if not prctl(PR_SET_DUMPABLE, 0):
        print("runner: cannot make itself non-dumpable", file=sys.stderr)
    # Orphans (double-forked daemons) become the runner's children, so it can find and kill them.
    if not prctl(PR_SET_CHILD_SUBREAPER, 1):
        print("runner: cannot become a child subreaper; setsid daemons may escape", file=sys.stderr)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    _signal.signal(_signal.SIGCHLD, _wake_on_child)
    _signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    return wake_r, wake_w


def main(argv: list) -> int:
    """Run the spec named in argv and print the one result line; always exit 0 once printed."""
    budget = DEFAULT_LIMITS["result_bytes"]
    try:
        wake_fd, _ = prepare_runner()
        wait_seconds, remove_spec, spec_path = parse_arguments(argv)
        if wait_seconds is not None:
            wait_until_isolated(os.environ, wait_seconds)
        spec = load_spec(spec_path, remove_spec)
        budget = spec["limits"]["result_bytes"]
        result = run(spec, wake_fd)
    except SpecError as error:
        result = empty_result("error_setup", str(error))
    except GateError as error:
        result = empty_result("error_setup", f"isolation gate: {error}; the code was not run")
    except Exception as error:  # a fault of the runner still ends in a result line
        import traceback

        traceback.print_exc()
        result = empty_result("error_setup", f"internal error in the sandbox runner: {type(error).__name__}: {error}")
    line = RESULT_MARKER + serialise_within(result, budget) + "\n"
    sys.stdout.buffer.write(line.encode("ascii"))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
