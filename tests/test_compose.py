"""The production topology (DESIGN §12) without containers: docker-compose.yml is valid against
the Compose specification's JSON schema and has the properties §9/§12 ask for; the Dockerfile
installs WeasyPrint's libraries and runs as a non-root user; those Debian packages exist (and
carry what WeasyPrint loads) on a Debian machine. No Docker engine and no network needed:
check-jsonschema ships the schema (`vendor.compose-spec`), and any download attempt would hit a
dead proxy here."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from models.search import CLI_TYPES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# What WeasyPrint needs on Debian (its install docs; weasyprint/text/ffi.py dlopens gobject,
# pango, harfbuzz, harfbuzz-subset, fontconfig, pangoft2) and the templates' font.
WEASYPRINT_PACKAGES = {"libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz0b", "libharfbuzz-subset0",
                       "libfontconfig1", "fonts-dejavu-core"}
WEASYPRINT_SONAMES = ["libgobject-2.0.so.0", "libpango-1.0.so.0", "libharfbuzz.so.0",
                      "libharfbuzz-subset.so.0", "libfontconfig.so.1", "libpangoft2-1.0.so.0"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def _image(svc: dict) -> str:
    return svc.get("image", "")


def _by_image(services: dict[str, dict], prefix: str) -> dict[str, dict]:
    return {name: svc for name, svc in services.items() if _image(svc).startswith(prefix)}


def _command(svc: dict) -> list[str]:
    cmd = svc.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def _role(services: dict[str, dict], role: str) -> dict[str, dict]:
    return {n: s for n, s in services.items()
            if " ".join(_command(s)).endswith(f"-m worker --role {role}")}


def _conditions(svc: dict) -> dict[str, str]:
    deps = svc.get("depends_on", {})
    if isinstance(deps, list):  # short syntax: started, nothing more
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _one_shots(services: dict[str, dict]) -> set[str]:
    """Jobs: what something waits to have completed successfully."""
    return {dep for svc in services.values() for dep, cond in _conditions(svc).items()
            if cond == "service_completed_successfully"}


def _app_services(services: dict[str, dict]) -> dict[str, dict]:
    """The API and the workers (our image, long-running)."""
    return {n: s for n, s in services.items()
            if _image(s).startswith("onefamily:") and n not in _one_shots(services)}


# --- the schema ---------------------------------------------------------------------------------

def test_compose_file_is_valid_against_the_compose_specification() -> None:
    tool = Path(sys.executable).parent / "check-jsonschema"
    assert tool.exists(), "check-jsonschema is missing: install the test extras (`make test` does)"
    dead = "http://127.0.0.1:9"  # the schema is built in: a download attempt fails the test
    env = {**os.environ, "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    result = subprocess.run([str(tool), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- what is reachable ---------------------------------------------------------------------------

def test_only_the_api_is_published_and_only_on_loopback(services: dict[str, dict]) -> None:
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"api"}
    for port in services["api"]["ports"]:
        if isinstance(port, dict):
            assert port.get("host_ip") == "127.0.0.1", port
        else:
            assert str(port).startswith("127.0.0.1:"), port
    for svc in services.values():
        assert svc.get("network_mode") != "host"


def test_the_api_trusts_forwarded_headers_only_from_the_gateway(compose: dict, services: dict) -> None:
    cmd = " ".join(_command(services["api"]))
    allowed = re.search(r"--forwarded-allow-ips[= ](\S+)", cmd)
    assert allowed and "*" not in allowed.group(1)
    gateway = compose["networks"]["default"]["ipam"]["config"][0]["gateway"]
    assert allowed.group(1) == gateway


# --- Temporal --------------------------------------------------------------------------------------

def test_temporal_schema_is_set_up_by_admin_tools_not_auto_setup(services: dict[str, dict]) -> None:
    assert not [n for n, s in services.items() if "auto-setup" in _image(s)]
    servers = _by_image(services, "temporalio/server:")
    assert len(servers) == 1
    (server,) = servers.values()
    schema_jobs = {n for n, s in _by_image(services, "temporalio/admin-tools:").items()
                   if "temporal-sql-tool" in " ".join(_command(s))}
    assert schema_jobs, "no admin-tools job runs temporal-sql-tool"
    conditions = _conditions(server)
    assert any(conditions.get(job) == "service_completed_successfully" for job in schema_jobs)
    script = " ".join(_command(services[next(iter(schema_jobs))]))
    for needed in ("create", "setup-schema", "update-schema", "temporal_visibility", "--plugin postgres12"):
        assert needed in script, needed


def test_the_namespace_job_registers_our_search_attributes(services: dict[str, dict]) -> None:
    jobs = {n: s for n, s in _by_image(services, "temporalio/admin-tools:").items()
            if "search-attribute create" in " ".join(_command(s))}
    assert len(jobs) == 1
    (job,) = jobs.values()
    declared = dict(item.split("=", 1) for item in job["environment"]["SEARCH_ATTRIBUTES"].split())
    assert declared == CLI_TYPES  # models/search.py is the one list
    assert "namespace create" in " ".join(_command(job))
    (name,) = jobs
    for app in _app_services(services).values():
        assert _conditions(app).get(name) == "service_completed_successfully"


def test_images_are_pinned(services: dict[str, dict]) -> None:
    for name, svc in services.items():
        image = _image(svc)
        if image.startswith("onefamily:"):
            continue
        assert ":" in image and not image.endswith(":latest"), (name, image)
    for prefix in ("temporalio/server:", "temporalio/admin-tools:", "temporalio/ui:"):
        for name, svc in _by_image(services, prefix).items():
            assert re.fullmatch(r"\d+\.\d+\.\d+", _image(svc).split(":", 1)[1]), (name, _image(svc))


def test_the_ui_signs_in_by_sso_and_cannot_write(services: dict[str, dict]) -> None:
    (ui,) = _by_image(services, "temporalio/ui:").values()
    env = ui["environment"]
    assert str(env["TEMPORAL_DISABLE_WRITE_ACTIONS"]).lower() == "true"
    assert str(env["TEMPORAL_AUTH_ENABLED"]).lower() == "true"
    for key in ("TEMPORAL_AUTH_PROVIDER_URL", "TEMPORAL_AUTH_CLIENT_ID", "TEMPORAL_AUTH_CLIENT_SECRET",
                "TEMPORAL_AUTH_CALLBACK_URL"):
        assert re.match(r"\$\{[A-Z_]+:\?", str(env[key])), (key, env[key])
    assert str(env["TEMPORAL_CODEC_ENDPOINT"]).endswith("/codec")
    assert "ONEFAMILY_PUBLIC_URL" in str(env["TEMPORAL_CODEC_ENDPOINT"])
    assert str(env["TEMPORAL_CODEC_PASS_ACCESS_TOKEN"]).lower() == "true"


# --- health and order ----------------------------------------------------------------------------

def test_every_long_running_service_has_a_healthcheck(services: dict[str, dict]) -> None:
    jobs = _one_shots(services)
    assert {"migrate"} <= jobs
    for name, svc in services.items():
        if name in jobs:
            assert svc.get("restart", "no").startswith(("no", "on-failure")), name
            continue
        check = svc.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), name
    for name in ("temporal-db", "readmodel-db"):
        assert "pg_isready" in " ".join(services[name]["healthcheck"]["test"])
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])


def test_applications_wait_for_healthy_dependencies_and_migrations(services: dict[str, dict]) -> None:
    (server,) = _by_image(services, "temporalio/server:")
    for name, svc in _app_services(services).items():
        conditions = _conditions(svc)
        assert conditions.get("migrate") == "service_completed_successfully", name
        assert conditions.get("readmodel-db") == "service_healthy", name
        assert conditions.get(server) == "service_healthy", name
    # Migrations once per deployment, not in a uvicorn command line.
    assert "migrate" not in " ".join(_command(services["api"]))


def test_both_databases_keep_their_data_in_volumes(compose: dict, services: dict[str, dict]) -> None:
    for name in ("temporal-db", "readmodel-db"):
        (mount,) = services[name]["volumes"]
        volume, target = str(mount).split(":", 1)
        assert target == "/var/lib/postgresql/data" and volume in compose["volumes"]


# --- the application -------------------------------------------------------------------------------

def test_api_and_workers_share_one_required_encryption_key(services: dict[str, dict]) -> None:
    apps = _app_services(services)
    keys = {name: svc["environment"]["ONEFAMILY_ENCRYPTION_KEY"] for name, svc in apps.items()}
    assert len(set(keys.values())) == 1, keys
    assert next(iter(keys.values())).startswith("${ONEFAMILY_ENCRYPTION_KEY:?")
    assert {"api"} <= set(apps) and _role(services, "cases") and _role(services, "documents")
    for svc in apps.values():  # and the same Temporal and read model
        assert svc["environment"]["TEMPORAL_ADDRESS"] == services["api"]["environment"]["TEMPORAL_ADDRESS"]
        assert svc["environment"]["DATABASE_URL"] == services["api"]["environment"]["DATABASE_URL"]


def test_api_runs_several_uvicorn_processes_without_access_log(services: dict[str, dict]) -> None:
    cmd = _command(services["api"])
    assert cmd[0] == "uvicorn"
    joined = " ".join(cmd)
    workers = re.search(r"--workers[= ](\d+)", joined)
    assert workers and int(workers.group(1)) >= 2
    assert "--no-access-log" in cmd and "--proxy-headers" in cmd
    env = services["api"]["environment"]
    assert env["ONEFAMILY_AUTH"] == "oidc"
    for key in ("ONEFAMILY_OIDC_ISSUER", "ONEFAMILY_OIDC_CLIENT_ID", "ONEFAMILY_OIDC_CLIENT_SECRET",
                "ONEFAMILY_PUBLIC_URL", "ONEFAMILY_ALLOWED_HOSTS"):
        assert str(env[key]).startswith(f"${{{key}:?"), key


def test_case_workers_are_replicated_and_documents_have_their_own(services: dict[str, dict]) -> None:
    cases, documents = _role(services, "cases"), _role(services, "documents")
    assert len(documents) == 1
    assert sum(int(s.get("deploy", {}).get("replicas", 1)) for s in cases.values()) >= 2


def test_no_secret_is_written_into_the_compose_file(services: dict[str, dict]) -> None:
    secretish = re.compile(r"PASSWORD|PWD|SECRET|TOKEN|ENCRYPTION_KEY$")
    for name, svc in services.items():
        env = svc.get("environment", {})
        assert isinstance(env, dict), name
        for key, value in env.items():
            if secretish.search(key) and str(value).lower() not in ("true", "false"):  # not a switch
                assert str(value).startswith("${"), (name, key)
        assert "@" not in str(env.get("DATABASE_URL", "")).split("${", 1)[0], name


# --- the image -----------------------------------------------------------------------------------

def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _apt_packages() -> set[str]:
    packages: set[str] = set()
    for op, rest in _instructions():
        if op == "RUN" and "apt-get install" in rest:
            for command in rest.split("&&"):
                words = command.split()
                if "install" in words and words[:1] == ["apt-get"]:
                    packages |= {w for w in words[words.index("install") + 1:] if not w.startswith("-")}
    return packages


def test_dockerfile_has_a_pinned_slim_base_weasyprint_libraries_and_a_non_root_user() -> None:
    steps = _instructions()
    (base,) = [rest for op, rest in steps if op == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    assert WEASYPRINT_PACKAGES <= _apt_packages()
    users = [rest for op, rest in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    last_user = max(i for i, (op, _) in enumerate(steps) if op == "USER")
    assert not [op for op, _ in steps[last_user:] if op == "RUN"], "RUN after the last USER"
    assert any(op == "HEALTHCHECK" and "/readyz" in rest for op, rest in steps)
    assert any(op == "RUN" and "-m 0700" in rest and "/var/lib/onefamily" in rest for op, rest in steps)
    for op, rest in steps:
        if op in ("ENV", "ARG"):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|ENCRYPTION_KEY)\s*=", rest), rest
        if op == "RUN" and "pip install" in rest:
            assert "[test]" not in rest and "[dev]" not in rest, rest


def test_dockerignore_keeps_local_data_and_secrets_out() -> None:
    ignored = set(DOCKERIGNORE.read_text().split())
    assert {".venv/", ".data/", ".git/", "test-artifacts/", "tests/oidc/node_modules/", "**/.env"} <= ignored


@pytest.mark.skipif(not (shutil.which("apt-cache") and shutil.which("dpkg-query")), reason="not Debian")
def test_the_weasyprint_packages_exist_and_provide_what_weasyprint_loads() -> None:
    """On this Debian machine: every package of the Dockerfile has an apt candidate, and each
    library WeasyPrint dlopens is a file of one of them or of their direct dependencies."""
    packages = sorted(_apt_packages())
    policy = subprocess.run(["apt-cache", "policy", *packages], capture_output=True, text=True,
                            timeout=30).stdout
    for package in packages:
        block = re.search(rf"^{re.escape(package)}:\n(?:  .*\n)*?  Candidate: (\S+)", policy, re.M)
        assert block and block.group(1) != "(none)", f"{package} has no apt candidate"
    depends = subprocess.run(["apt-cache", "depends", "--no-recommends", "--no-suggests", *packages],
                             capture_output=True, text=True, timeout=30).stdout
    closure = set(packages) | set(re.findall(r"Depends: <?([\w.+-]+)>?", depends))
    ldconfig = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
    for soname in WEASYPRINT_SONAMES:
        path = re.search(rf"^\s+{re.escape(soname)} \(.*\) => (\S+)", ldconfig, re.M)
        if path is None:
            pytest.skip(f"{soname} not installed here: cannot check what provides it")
        owner = subprocess.run(["dpkg-query", "-S", os.path.realpath(path.group(1))], capture_output=True,
                               text=True, timeout=30).stdout.split(":", 1)[0]
        assert owner in closure, f"{soname} comes from {owner}, not from the Dockerfile's packages"
