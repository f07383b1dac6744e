"""README.md as a newcomer meets it: every shell command and the Python
example of its fenced code blocks run, in order, against a real demo
`pcipassd` started the way the quick start says, in a temporary directory.

Fenced blocks are `sh` (run), `python` (the SDK example, saved as the
README says) or `text` (not code). A command the tests cannot run ends with
`# not run by tests: REASON` and is skipped with that reason. What the test
changes in a command: `target/release` becomes $PCIPASS_BIN_DIR, the demo's
`127.0.0.1:8080` the address the test daemon was given (port 0, so never
taken), `.venv/bin/python` the Python running the tests.
"""

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import BIN_DIR, REPO, binary, stop_process

README = REPO / "README.md"
SKIP = re.compile(r"#\s*not run by tests:\s*(?P<reason>\S.*)$")
DAEMON = re.compile(r"^target/release/pcipassd\s+--demo\b")
STEP_TIMEOUT = 60
LANGUAGES = {"sh", "python", "text"}


def blocks(text=None):
    """The fenced blocks of README.md: (language, body, first line number)."""
    text = README.read_text() if text is None else text
    found, lang, body, start = [], None, [], 0
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^```(\S*)\s*$", line)
        if fence and lang is None:
            lang, body, start = fence.group(1), [], number + 1
        elif fence:
            found.append((lang, "\n".join(body) + "\n", start))
            lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, "README.md: a fenced block is not closed"
    return found


def steps():
    """What the test does, in README order: ("sh", script, line),
    ("python", source, line), ("skip", reason, line)."""
    out = []
    for lang, body, start in blocks():
        if lang == "python":
            out.append(("python", body, start))
            continue
        if lang != "sh":
            continue
        script, script_line = [], None
        for offset, line in enumerate(body.splitlines()):
            skip = SKIP.search(line)
            if skip:
                out.append(("skip", f"{line.split('#')[0].strip()}: {skip.group('reason')}", start + offset))
            elif DAEMON.match(line.strip()):
                out.append(("daemon", line.strip(), start + offset))
            elif line.strip():
                script.append(line)
                script_line = script_line or start + offset
        if script:
            out.append(("sh", "\n".join(script) + "\n", script_line))
    return out


STEPS = steps()


def programs(text):
    """The README's `target/release` programs are the tests' binaries."""
    text = text.replace("$PWD/target/release", str(BIN_DIR))
    return re.sub(r"(?<![\w/.])target/release/", str(BIN_DIR) + "/", text)


def substitute(text, demo):
    text = programs(text)
    text = text.replace("127.0.0.1:8080", demo.addr)
    text = re.sub(r"-p 8080\b", f"-p {demo.port}", text)
    text = re.sub(r"(?<![\w/])\.venv/bin/python\b", sys.executable, text)
    return text


def environment():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCIPASS_")}
    env["PATH"] = f"{BIN_DIR}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


class Demo:
    """The quick start's `pcipassd --demo`, in its own directory."""

    def __init__(self, workdir, command, extra=()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = programs(command).split()
        args += ["--listen", "127.0.0.1:0", *extra]
        self.log = open(self.workdir / "pcipassd.log", "w")
        self.proc = subprocess.Popen(
            args, cwd=self.workdir, stdout=subprocess.PIPE, stderr=self.log, text=True, env=environment()
        )
        self.lines = []
        deadline = time.time() + STEP_TIMEOUT
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("pcipassd exited: " + (self.workdir / "pcipassd.log").read_text()[-2000:])
            self.lines.append(line.rstrip("\n"))
            if line.startswith("demo: PCIPASS_SOCKET="):
                break
        else:
            raise RuntimeError(f"no demo lines within {STEP_TIMEOUT}s: {self.lines}")
        # Keep reading, so the daemon never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        url = next(l for l in self.lines if l.startswith("demo: url "))
        m = re.match(r"demo: url (https?)://([\d.]+):(\d+)/ user (\S+) password (\S+)$", url)
        assert m, url
        self.scheme, host, port, self.user, self.password = m.groups()
        self.port = int(port)
        self.addr = f"{host}:{port}"

    def stop(self):
        stop_process(self.proc)
        self.log.close()


def daemon_command():
    found = [text for kind, text, _ in STEPS if kind == "daemon"]
    assert len(found) == 1, f"README.md should start one demo daemon, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    # A short path: the Unix socket's path must fit in sun_path.
    d = Demo(tmp_path_factory.mktemp("readme"), daemon_command())
    yield d
    d.stop()


def run_shell(script, cwd):
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
    )


def test_every_block_is_labelled_and_skips_are_few():
    langs = [(lang, start) for lang, _, start in blocks()]
    assert langs, "README.md has no fenced blocks"
    for lang, start in langs:
        assert lang in LANGUAGES, f"README.md line {start}: fence language {lang!r} not in {sorted(LANGUAGES)}"
    skips = [s for s in STEPS if s[0] == "skip"]
    assert len(skips) <= 3, f"too many commands the tests skip: {skips}"
    assert any(k == "python" for k, _, _ in STEPS), "the Python example is gone"
    assert any(k == "sh" and "example.py" in t for k, t, _ in STEPS), "no command runs example.py"
    daemon_command()


def test_blocks_parser_sees_fences_and_skip_markers():
    text = "a\n```sh\nls   # not run by tests: why\necho hi\n```\n```text\nx\n```\n"
    assert blocks(text) == [("sh", "ls   # not run by tests: why\necho hi\n", 3), ("text", "x\n", 7)]
    assert SKIP.search("ls   # not run by tests: why").group("reason") == "why"


@pytest.mark.parametrize("step", STEPS, ids=[f"{kind}-line{line}" for kind, _, line in STEPS])
def test_readme_step(step, demo):
    kind, text, line = step
    if kind == "skip":
        pytest.skip(f"README.md line {line}: {text}")
    if kind == "daemon":
        # Started by the fixture: it is serving, and said so after binding.
        assert demo.proc.poll() is None
        return
    if kind == "python":
        # "Save this as example.py": a later sh command runs it.
        source = substitute(text, demo)
        compile(source, "example.py", "exec")
        (demo.workdir / "example.py").write_text(source)
        return
    script = substitute(text, demo)
    result = run_shell(script, demo.workdir)
    assert result.returncode == 0, (
        f"README.md line {line}: exit {result.returncode}\n--- script\n{script}"
        f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    )
    if "example.py" in script:
        # The example hid a GPU, and never the one dom0's console is on.
        assert "disable_on_reboot" in result.stdout, result.stdout
        listing = subprocess.run(
            [binary("pcipass"), "pci-list", "--table", "--socket", str(demo.workdir / "demo-state" / "xapi.sock"),
             "-u", demo.user, "-pw", demo.password],
            capture_output=True, text=True, timeout=STEP_TIMEOUT,
        )
        console = [l for l in listing.stdout.splitlines() if l.startswith("0000:00:02.0")]
        assert console and console[0].rstrip().endswith("enabled"), listing.stdout


def test_demo_lines_follow_the_listeners_and_work(demo):
    lines = demo.lines
    first_demo = next(i for i, l in enumerate(lines) if l.startswith("demo:"))
    listening = [i for i, l in enumerate(lines) if l.startswith("listening on ")]
    assert listening and max(listening) < first_demo, lines
    assert f"listening on http://{demo.addr}/" in lines
    assert demo.scheme == "http"
    commands = [l.removeprefix("demo: ") for l in lines if l.startswith("demo: ") and not l.startswith("demo: url")]
    assert len(commands) == 2, lines
    for command in commands:
        result = subprocess.run(
            ["bash", "-c", command + " --minimal"], cwd="/", env=environment(),
            capture_output=True, text=True, timeout=STEP_TIMEOUT,
        )
        assert result.returncode == 0 and result.stdout.count(",") >= 1, (command, result.stdout, result.stderr)


def test_demo_over_tls_prints_https_and_the_fingerprint(tmp_path):
    d = Demo(tmp_path, f"{binary('pcipassd')} --demo --state-dir ./demo-state", ["--tls-self-signed"])
    try:
        assert d.scheme == "https", d.lines
        fingerprint = next(l.split()[-1] for l in d.lines if l.startswith("tls certificate sha256 fingerprint"))
        tcp = next(l.removeprefix("demo: ") for l in d.lines if " -s " in l)
        assert f"--fingerprint {fingerprint}" in tcp, tcp
        result = subprocess.run(
            ["bash", "-c", tcp + " --minimal"], env=environment(), capture_output=True, text=True, timeout=STEP_TIMEOUT
        )
        assert result.returncode == 0 and result.stdout.strip(), (tcp, result.stderr)
    finally:
        d.stop()


def test_a_missing_root_is_a_start_up_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-root"
    result = subprocess.run(
        [binary("pcipassd"), "--root", str(missing), "--state-dir", str(tmp_path / "state"),
         "--unix", str(tmp_path / "x.sock")],
        capture_output=True, text=True, timeout=STEP_TIMEOUT,
    )
    assert result.returncode != 0
    assert str(missing) in result.stderr, result.stderr
    assert "listening on" not in result.stdout


def test_a_restarted_demo_prints_its_lines_again(tmp_path):
    # The second start finds the first one's socket file (and password).
    first = Demo(tmp_path, f"{binary('pcipassd')} --demo --state-dir ./demo-state")
    first.stop()
    second = Demo(tmp_path, f"{binary('pcipassd')} --demo --state-dir ./demo-state")
    try:
        assert second.password == first.password
    finally:
        second.stop()
