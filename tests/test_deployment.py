"""The deployment files, checked without a Docker engine (none runs on these machines).

Static checks: what the Dockerfile copies exists and is not excluded by .dockerignore, every command the images,
the compose files and the Kubernetes manifests run is a real `kommunrouter` command line, and ports, probe paths
and KOMMUNROUTER_* names agree with the service (its Settings and its routes). The slow check builds the serving
environment the way the Dockerfile's build stage does (its COPY and RUN instructions, run in a temporary
directory) and starts the image's command from it with models/default.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.main import get_command

from app.artifact import read_manifest
from app.cli import cli
from app.config import Settings

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "models" / "default"
KUBERNETES_DIR = REPO / "deploy" / "kubernetes"
SERVE_PORT = 8000
MISSING_MODEL = "models/default is not in the repository yet: the image bakes it in"


# --- a Dockerfile reader (the subset of the syntax our Dockerfile uses; heredocs are not supported) -----------


@dataclass
class Instruction:
    keyword: str
    flags: dict[str, str]
    value: str
    line: int

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of CMD/ENTRYPOINT/HEALTHCHECK CMD; anything else is an error here."""
        text = self.value.removeprefix("CMD").strip() if self.keyword == "HEALTHCHECK" else self.value
        parsed = json.loads(text)
        assert isinstance(parsed, list) and all(isinstance(item, str) for item in parsed), self.value
        return parsed


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [instruction for instruction in self.instructions if instruction.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise AssertionError(f"the Dockerfile has no stage {name!r}")

    def chain(self, name: str, args: Mapping[str, str] | None = None) -> list[Stage]:
        """The stage and the stages it is built FROM, the root first."""
        values = {**self.global_args, **(args or {})}
        names = {stage.name for stage in self.stages}
        chain = [self.stage(name)]
        while (parent := expand(chain[0].base, values)) in names:
            chain.insert(0, self.stage(parent))
        return chain

    def environment(self, name: str, args: Mapping[str, str] | None = None) -> dict[str, str]:
        """The ENV a container of stage ``name`` starts with (inherited from its base stages), PATH from $PATH."""
        env: dict[str, str] = {"PATH": "$PATH"}
        for stage in self.chain(name, args):
            for instruction in stage.all("ENV"):
                for key, value in key_values(instruction.value).items():
                    env[key] = expand(value, env)
        return env


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Instructions with their continuation lines joined; comment lines are dropped, also inside a continuation."""
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:  # Docker skips both, also inside a continuation
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        buffer.append(stripped)
        yield start, " ".join(part for part in buffer if part)
        buffer = []
    assert not buffer, "the Dockerfile ends inside a continuation"


def parse_dockerfile(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags: dict[str, str] = {}
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.strip()
        instruction = Instruction(keyword, flags, rest.strip(), number)
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", instruction.value, flags=re.IGNORECASE)
            assert match, f"line {number}: every stage is named (FROM image AS name)"
            stages.append(Stage(name=match.group(2), base=match.group(1)))
        elif not stages:
            assert keyword == "ARG", f"line {number}: only ARG may come before the first FROM"
            global_args.update(key_values(instruction.value))
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)


def key_values(text: str) -> dict[str, str]:
    """``KEY=value KEY2="value 2"`` (ENV, ARG, LABEL); an ARG without a value maps to ""."""
    pairs = {}
    for token in shlex.split(text):
        key, _, value = token.partition("=")
        pairs[key] = value
    return pairs


def expand(text: str, values: Mapping[str, str]) -> str:
    """Docker's ``$NAME`` and ``${NAME}`` substitution (unknown names stay as they are)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, text)


def shell_commands(argv: list[str]) -> list[list[str]]:
    """The commands of an exec-form command: ``["/bin/sh", "-c", "a && exec b"]`` gives a and b."""
    if argv[:2] != ["/bin/sh", "-c"]:
        return [argv]
    commands = []
    for part in argv[2].split("&&"):
        words = shlex.split(part)
        commands.append(words[1:] if words[0] == "exec" else words)
    return commands


# --- .dockerignore: the matching rules of Docker's pattern matcher ---------------------------------------------


@dataclass
class IgnorePattern:
    regex: re.Pattern[str]
    negated: bool


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match syntax plus ``**`` (any number of directories), as Docker reads .dockerignore."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])  # a character class: Go and Python agree on [a-z] and [^a-z]
            i = end
        elif char == "\\":
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out))


def read_dockerignore(path: Path) -> list[IgnorePattern]:
    patterns = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        cleaned = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        patterns.append(IgnorePattern(pattern_regex(cleaned), negated))
    return patterns


def is_ignored(relative: str, patterns: list[IgnorePattern]) -> bool:
    """Whether the build context leaves ``relative`` out: the last pattern matching it, or a parent, decides."""
    parts = relative.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        if any(pattern.regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not pattern.negated
    return ignored


def context_files(source: Path, patterns: list[IgnorePattern]) -> list[Path]:
    """The files under ``source`` that the build context holds."""
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    return [p for p in files if not is_ignored(p.relative_to(REPO).as_posix(), patterns)]


# --- compose files ---------------------------------------------------------------------------------------------


@dataclass
class Reset:
    """Compose's ``!reset`` and ``!override``: the value replaces what the earlier files set."""

    value: Any


class ComposeLoader(yaml.SafeLoader):
    pass


def _reset(loader: yaml.SafeLoader, node: yaml.Node) -> Reset:
    if isinstance(node, yaml.SequenceNode):
        return Reset(loader.construct_sequence(node))
    if isinstance(node, yaml.MappingNode):
        return Reset(loader.construct_mapping(node))
    return Reset(loader.construct_scalar(node))


ComposeLoader.add_constructor("!reset", _reset)
ComposeLoader.add_constructor("!override", _reset)

# Compose replaces these sequences when a later file sets them; it appends to the others (ports, volumes...).
REPLACED_SEQUENCES = {"command", "entrypoint", "test", "profiles"}


def merge_compose(base: Any, override: Any, key: str = "") -> Any:
    if isinstance(override, Reset):
        return override.value
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            merged[name] = merge_compose(base[name], value, name) if name in base else unwrap(value)
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in REPLACED_SEQUENCES:
        return base + [item for item in override if item not in base]
    return unwrap(override)


def unwrap(value: Any) -> Any:
    if isinstance(value, Reset):
        return value.value
    if isinstance(value, dict):
        return {key: unwrap(item) for key, item in value.items()}
    return value


def load_compose(*names: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in names:
        merged = merge_compose(merged, yaml.load((REPO / name).read_text(encoding="utf-8"), Loader=ComposeLoader))
    return merged


def interpolate(value: Any, variables: Mapping[str, str] | None = None) -> Any:
    """Compose's ``${NAME:-default}`` / ``${NAME-default}`` / ``${NAME}``, with the variables unset by default."""
    variables = variables or {}
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, operator, default = match.group(1), match.group(2), match.group(3) or ""
        current = variables.get(name)
        if operator == ":-":
            return current or default
        if operator == "-":
            return default if current is None else current
        assert current is not None, f"${{{name}}} has no default: the demo would need it set"
        return current

    return re.sub(r"\$\{(\w+)(?:(:?-)([^}]*))?\}", replace, value)


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in interpolate(environment).items()}


def published_ports(service: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each short-syntax ports entry."""
    ports = []
    for entry in service.get("ports", []):
        *host, container = str(entry).split(":")
        address = host[0] if len(host) == 2 else "0.0.0.0"
        ports.append((address, int(host[-1]), int(container)))
    return ports


# --- the CLI and the Settings --------------------------------------------------------------------------------


def check_cli_invocation(argv: list[str]) -> Any:
    """Parse ``argv`` (``kommunrouter ...``) with the real CLI, as the command would: an unknown command or option,
    a wrong type or a missing required option raises. Returns the (click-style) context of the command that would
    run, with its parsed ``params``."""
    assert argv and argv[0] == "kommunrouter", f"not a kommunrouter command: {argv}"
    command = get_command(cli)
    context = command.context_class(command, info_name="kommunrouter")
    name, args = "kommunrouter", argv[1:]
    while hasattr(command, "list_commands"):  # a group: the next word names the subcommand
        assert args, f"{argv}: no subcommand"
        name, args = args[0], args[1:]
        sub = command.get_command(context, name)
        assert sub is not None, f"{argv}: `{name}` is not a kommunrouter command"
        if hasattr(sub, "list_commands"):
            context = sub.context_class(sub, info_name=name, parent=context)
        command = sub
    return command.make_context(name, list(args), parent=context)


def settings_env_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def settings_from(environment: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a process with ``environment`` would get (validated as the service validates them)."""
    for name in list(os.environ):
        if name.startswith("KOMMUNROUTER_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings()


def kommunrouter_env(environment: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in environment.items() if name.startswith("KOMMUNROUTER_")}


def probe_statuses(paths: set[str]) -> dict[str, int]:
    """GET each path of the app (no lifespan: no model is loaded): 404 means there is no such route."""
    from app.main import create_app

    async def get_all() -> dict[str, int]:
        transport = httpx.ASGITransport(app=create_app(Settings(open_access=True)))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return {path: (await client.get(path)).status_code for path in sorted(paths)}

    return asyncio.run(get_all())


# --- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(REPO / "Dockerfile")


@pytest.fixture(scope="module")
def ignore_patterns() -> list[IgnorePattern]:
    return read_dockerignore(REPO / ".dockerignore")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose("docker-compose.yml")


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object under deploy/kubernetes by (kind, name)."""
    objects = {}
    for path in sorted(KUBERNETES_DIR.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            key = (document["kind"], document.get("metadata", {}).get("name", path.stem))
            assert key not in objects, f"{key} is defined twice"
            objects[key] = document
    return objects


def load_requirements_script() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("pyproject_requirements", REPO / "deploy/pyproject_requirements.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- Dockerfile ----------------------------------------------------------------------------------------------


def test_dockerfile_serves_by_default_and_builds_the_service_without_torch(dockerfile: Dockerfile) -> None:
    assert dockerfile.stages[-1].name == "serve", "`docker build .` builds the last stage: it must be the service"
    assert [stage.name for stage in dockerfile.chain("serve")] == ["base-cpu", "base", "serve"]
    assert [stage.name for stage in dockerfile.chain("serve", {"VARIANT": "gpu"})] == ["base-gpu", "base", "serve"]
    assert dockerfile.global_args["VARIANT"] == "cpu"
    assert dockerfile.stage("base-gpu").base == "${CUDA_IMAGE}"
    assert "cudnn-runtime" in dockerfile.global_args["CUDA_IMAGE"]
    # The serving image gets its packages only from the build stage's venv, which installs pyproject's base list.
    build_runs = " ".join(run.value for run in dockerfile.stage("build").all("RUN"))
    assert "pyproject_requirements.py base" in build_runs
    assert "[train]" not in build_runs and "torch" not in build_runs
    assert not [run for run in dockerfile.stage("serve").all("RUN") if "pip" in run.value]


def test_the_gpu_variant_swaps_onnxruntime_for_the_gpu_extra(
    dockerfile: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    swap = next(run.value for run in dockerfile.stage("build").all("RUN") if "gpu" in run.value)
    assert '"$VARIANT" = gpu' in swap
    assert "pip uninstall -y onnxruntime" in swap and "pyproject_requirements.py gpu" in swap
    gpu = load_requirements_script().requirements(REPO / "pyproject.toml", "gpu")
    assert [requirement.split("==")[0] for requirement in gpu] == ["onnxruntime-gpu"]
    environment = dockerfile.environment("serve", {"VARIANT": "gpu"})
    assert settings_from(kommunrouter_env(environment), monkeypatch).execution_provider == "cuda"
    assert "KOMMUNROUTER_EXECUTION_PROVIDER" not in dockerfile.environment("serve")


def test_the_serving_image_runs_as_a_non_root_user_and_checks_its_health(dockerfile: Dockerfile) -> None:
    serve = dockerfile.stage("serve")
    user = serve.last("USER").value
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"USER {user}: numeric and not root"
    assert serve.last("EXPOSE").value == str(SERVE_PORT)
    healthcheck = serve.last("HEALTHCHECK")
    argv = healthcheck.exec_form()
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "HEALTHCHECK", "exec")
    assert f"http://127.0.0.1:{SERVE_PORT}/healthz" in argv[2]
    assert probe_statuses({"/healthz"}) == {"/healthz": 200}


def test_the_image_command_migrates_and_then_serves(dockerfile: Dockerfile) -> None:
    commands = shell_commands(dockerfile.stage("serve").last("CMD").exec_form())
    assert [argv[1] for argv in commands] == ["migrate", "serve"]
    serve = check_cli_invocation(commands[1])
    assert serve.params["host"] == "0.0.0.0" and serve.params["port"] == SERVE_PORT
    assert dockerfile.stage("serve").last("CMD").exec_form()[2].split("&&")[1].split()[0] == "exec", (
        "the server replaces the shell, so that it gets the stop signal"
    )


def test_the_training_image_runs_the_training_pipeline(dockerfile: Dockerfile) -> None:
    train = dockerfile.stage("train")
    commands = shell_commands(train.last("CMD").exec_form())
    contexts = [check_cli_invocation(argv) for argv in commands]
    assert [argv[1] for argv in commands] == ["train", "export"]
    assert (REPO / contexts[0].params["config"]).is_file()
    # export reads the run that train writes and writes the artifact the serving image bakes in.
    assert Path(contexts[1].params["run"]) == Path(tomllib_load(REPO / contexts[0].params["config"])["output_dir"])
    assert contexts[1].params["out"] == Path("models/default")
    torch_index = next(arg for arg in train.all("ARG") if arg.value.startswith("TORCH_INDEX="))
    assert torch_index.value == "TORCH_INDEX=https://download.pytorch.org/whl/cpu"
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", train.last("USER").value)


def tomllib_load(path: Path) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(path.read_text(encoding="utf-8"))


def test_the_training_cache_variable_is_the_one_training_reads(
    dockerfile: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.base_model import default_cache_dir

    training_env = {
        name: value
        for name, value in dockerfile.environment("train").items()
        if name.startswith("KOMMUNROUTER_") and name not in settings_env_names()
    }
    assert training_env == {"KOMMUNROUTER_CACHE_DIR": "/app/runs/.cache"}
    monkeypatch.setenv("KOMMUNROUTER_CACHE_DIR", training_env["KOMMUNROUTER_CACHE_DIR"])
    assert default_cache_dir() == Path("/app/runs/.cache")


def test_every_copied_file_exists_and_is_in_the_build_context(
    dockerfile: Dockerfile, ignore_patterns: list[IgnorePattern]
) -> None:
    copies = [
        (stage.name, source)
        for stage in dockerfile.stages
        for instruction in stage.all("COPY")
        if "from" not in instruction.flags
        for source in shlex.split(instruction.value)[:-1]
    ]
    assert ("serve", "models/default/") in copies
    missing_model = False
    for stage, source in copies:
        path = REPO / source
        if path == MODEL_DIR and not path.exists():
            missing_model = True
            continue
        assert path.exists(), f"stage {stage} copies {source}, which does not exist"
        assert not is_ignored(source, ignore_patterns), f"stage {stage} copies {source}, which .dockerignore excludes"
        sent = context_files(path, ignore_patterns)
        assert sent, f"stage {stage} copies {source}, but the build context holds none of its files"
        if path.is_dir():
            wanted = [
                p
                for p in path.rglob("*")
                if p.is_file()
                and "__pycache__" not in p.parts
                and p.suffix in {".py", ".onnx", ".json", ".jsonl", ".toml", ".ini", ".mako", ".md"}
            ]
            assert set(wanted) <= set(sent), f"{source}: left out of the build context: {set(wanted) - set(sent)}"
    if missing_model:
        pytest.skip(MISSING_MODEL)


def test_copies_between_stages_keep_their_paths(dockerfile: Dockerfile) -> None:
    """The venv holds absolute paths (its interpreter, the editable install of /app): they must not move."""
    copies = [copy for copy in dockerfile.stage("serve").all("COPY") if "from" in copy.flags]
    assert {copy.flags["from"] for copy in copies} == {"build"}
    environment = dockerfile.environment("build")
    workdir = dockerfile.stage("build").last("WORKDIR").value
    moved = {tuple(shlex.split(copy.value)) for copy in copies}
    assert moved == {(environment["VIRTUAL_ENV"],) * 2, (workdir,) * 2}
    assert dockerfile.stage("serve").last("WORKDIR").value == workdir


def test_dockerignore_keeps_the_context_small_but_keeps_the_model(ignore_patterns: list[IgnorePattern]) -> None:
    for left_out in [
        ".venv/bin/python",
        ".git/HEAD",
        "runs/default/checkpoint.pt",
        "var/kommunrouter.db",
        ".mypy_cache/3.11/app",
        ".pytest_cache/v/cache",
        ".ruff_cache/x",
        ".hypothesis/examples/x",
        "bench/results/latency.json",
        "tests/test_deployment.py",
        "app/__pycache__/cli.cpython-311.pyc",
        "app/api/__pycache__/deps.cpython-311.pyc",
        "kommunrouter.egg-info/PKG-INFO",
        "models/experiment/model.onnx",
        "deploy/kubernetes/deployment.yaml",
    ]:
        assert is_ignored(left_out, ignore_patterns), f"{left_out} would be sent to the Docker daemon"
    for kept in [
        "models/default/model.onnx",
        "models/default/tokenizer.json",
        "models/default/manifest.json",
        "app/cli.py",
        "migrations/versions/0001_decisions_and_feedback.py",
        "deploy/pyproject_requirements.py",
        "pyproject.toml",
        "README.md",
    ]:
        assert not is_ignored(kept, ignore_patterns), f"{kept} is left out of the build context"


def test_requirements_script_reads_the_groups_of_pyproject(capsys: pytest.CaptureFixture[str]) -> None:
    script = load_requirements_script()
    pyproject = REPO / "pyproject.toml"
    base = script.requirements(pyproject, "base")
    names = {script.requirement_name(line) for line in base}
    assert {"onnxruntime", "openvino", "tokenizers", "fastapi", "uvicorn", "alembic"} <= names
    assert not names & {"torch", "transformers", "onnxruntime-gpu"}
    assert script.requirements(pyproject, "train", ["Torch"]) == [
        line
        for line in tomllib_load(pyproject)["project"]["optional-dependencies"]["train"]
        if line.startswith("torch")
    ]
    assert script.main(["--pyproject", str(pyproject), "train", "--only", "no-such-package"]) == 1
    assert "no requirement for no-such-package" in capsys.readouterr().err
    assert script.main(["--pyproject", str(pyproject), "nope"]) == 1
    assert "has no extra 'nope'" in capsys.readouterr().err
    assert script.main(["--pyproject", str(pyproject)]) == 0
    assert capsys.readouterr().out.splitlines() == base


# --- docker-compose.yml ---------------------------------------------------------------------------------------


def test_compose_api_waits_for_a_migrated_healthy_database(compose: dict[str, Any], dockerfile: Dockerfile) -> None:
    services = compose["services"]
    postgres, migrate, api = services["postgres"], services["migrate"], services["api"]
    assert any(volume.split(":")[0] in compose["volumes"] for volume in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert api["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    for name in ("migrate", "api"):
        assert services[name]["build"]["target"] == "serve"
        assert services[name]["image"] == services["api"]["image"]
    assert [argv[1] for argv in (migrate["command"], api["command"])] == ["migrate", "serve"]
    serve = check_cli_invocation(api["command"])
    assert serve.params["port"] == SERVE_PORT
    check_cli_invocation(migrate["command"])
    assert published_ports(api) == [("127.0.0.1", SERVE_PORT, SERVE_PORT)]
    dockerfile.stage(api["build"]["target"])


def test_compose_api_settings_are_valid_and_point_at_the_postgres_service(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    postgres = service_environment(services["postgres"])
    for name in ("migrate", "api"):
        environment = service_environment(services[name])
        assert set(environment) <= settings_env_names(), (
            f"{name}: not a setting: {set(environment) - settings_env_names()}"
        )
        settings = settings_from(environment, monkeypatch)
        url = httpx.URL(settings.database_url.replace("postgresql+psycopg://", "http://", 1))
        assert settings.database_url.startswith("postgresql+psycopg://")
        assert (url.username, url.password, url.host, url.port, url.path) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            "postgres",
            5432,
            "/" + postgres["POSTGRES_DB"],
        )
        assert settings.open_access, "the demo at /docs works without a key"
    # ... and KOMMUNROUTER_OPEN_ACCESS=false in the shell (or .env) turns it off.
    switch = interpolate(services["api"]["environment"], {"KOMMUNROUTER_OPEN_ACCESS": "false"})
    assert settings_from(switch, monkeypatch).open_access is False


def test_compose_train_profile_builds_the_training_image(compose: dict[str, Any], dockerfile: Dockerfile) -> None:
    train = compose["services"]["train"]
    assert train["profiles"] == ["train"]
    assert train["build"]["target"] == "train"
    dockerfile.stage("train")
    workdir = dockerfile.stage("train").last("WORKDIR").value
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in train["volumes"]}
    # train writes runs/ and models/ (relative to the image's WORKDIR): both must land on the host.
    assert mounts[f"{workdir}/runs"] == "./runs" and mounts[f"{workdir}/models"] == "./models"
    for source in ("./data", "./configs"):
        assert (REPO / source).is_dir()
    assert not {name for name, service in compose["services"].items() if name != "train" and "profiles" in service}


def test_scale_override_puts_replicas_behind_nginx(compose: dict[str, Any]) -> None:
    scaled = load_compose("docker-compose.yml", "docker-compose.scale.yml")
    services = scaled["services"]
    api, lb = services["api"], services["lb"]
    assert api["deploy"]["replicas"] >= 2
    limits, reservations = api["deploy"]["resources"]["limits"], api["deploy"]["resources"]["reservations"]
    assert float(limits["cpus"]) >= float(service_environment(api)["KOMMUNROUTER_INTRA_OP_THREADS"])
    assert limits["memory"] and reservations["memory"] and reservations["cpus"]
    assert api["ports"] == [], "replicas publishing one host port would collide"
    published = [(name, port) for name, service in services.items() for port in published_ports(service)]
    assert published == [("lb", ("127.0.0.1", SERVE_PORT, 80))]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert lb["depends_on"] == {"api": {"condition": "service_healthy"}}
    config_mount = next(volume for volume in lb["volumes"] if volume.endswith("/etc/nginx/nginx.conf:ro"))
    config = (REPO / config_mount.split(":")[0]).read_text(encoding="utf-8")
    upstream = re.search(r"upstream\s+(\w+)\s*\{([^}]*)\}", config)
    assert upstream, "nginx.conf defines the upstream of the replicas"
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream.group(2), flags=re.MULTILINE)
    assert servers == [("api", str(SERVE_PORT))], "the upstream is the compose service api on the serve port"
    assert f"proxy_pass http://{upstream.group(1)};" in config
    assert re.search(r"listen\s+80;", config)
    assert "127.0.0.11" in config, "nginx asks Docker's DNS, which knows every replica"


def test_gpu_override_builds_the_gpu_variants(compose: dict[str, Any], dockerfile: Dockerfile) -> None:
    gpu = load_compose("docker-compose.yml", "deploy/docker-compose.gpu.yml")["services"]
    assert set(gpu) == set(compose["services"])
    assert gpu["api"]["build"]["args"]["VARIANT"] == gpu["migrate"]["build"]["args"]["VARIANT"] == "gpu"
    assert gpu["api"]["image"] == gpu["migrate"]["image"] != compose["services"]["api"]["image"]
    assert gpu["api"]["build"]["target"] == "serve"
    train_args = {key for arg in dockerfile.stage("train").all("ARG") for key in key_values(arg.value)}
    assert set(gpu["train"]["build"]["args"]) <= train_args
    assert gpu["train"]["build"]["args"]["TORCH_INDEX"].startswith("https://download.pytorch.org/whl/cu")
    for name in ("api", "train"):
        devices = gpu[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]


# --- Kubernetes ------------------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest(manifests: dict[tuple[str, str], dict[str, Any]]) -> None:
    kustomization = manifests[("Kustomization", "kustomization")]
    listed = set(kustomization["resources"])
    assert listed == {path.name for path in KUBERNETES_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert {image["name"] for image in kustomization["images"]} == {
        container["image"] for container in pod_containers(manifests[("Deployment", "kommunrouter")])
    }


def pod_containers(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_deployment_runs_replicas_with_probes_and_resources(
    manifests: dict[tuple[str, str], dict[str, Any]], dockerfile: Dockerfile
) -> None:
    deployment = manifests[("Deployment", "kommunrouter")]
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] >= 2
    (api,) = pod["containers"]
    serve = check_cli_invocation(api["command"])
    assert [port["containerPort"] for port in api["ports"]] == [serve.params["port"]]
    port_names = {port["name"] for port in api["ports"]}
    probes = {kind: api[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/healthz"
    assert all(probe["port"] in port_names for probe in probes.values())
    # Before the model is loaded the process is alive but not ready.
    assert probe_statuses({"/healthz", "/readyz"}) == {"/healthz": 200, "/readyz": 503}
    for container in pod_containers(deployment):
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        check_cli_invocation(container["command"])
    (migrate,) = pod["initContainers"]
    assert migrate["command"] == ["kommunrouter", "migrate"]
    uid, gid = (int(part) for part in dockerfile.stage("serve").last("USER").value.split(":"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)


def test_deployment_settings_come_from_a_configmap_and_a_secret(
    manifests: dict[tuple[str, str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = manifests[("Deployment", "kommunrouter")]
    for container in pod_containers(deployment):
        environment: dict[str, str] = {}
        for source in container["envFrom"]:
            if "configMapRef" in source:
                environment.update(manifests[("ConfigMap", source["configMapRef"]["name"])]["data"])
            else:
                environment.update(manifests[("Secret", source["secretRef"]["name"])]["stringData"])
        assert set(environment) <= settings_env_names(), f"not settings: {set(environment) - settings_env_names()}"
        settings = settings_from(environment, monkeypatch)
        assert settings.database_url.startswith("postgresql+psycopg://") and not settings.open_access
        assert settings.api_keys
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    threads = int(manifests[("ConfigMap", "kommunrouter-config")]["data"]["KOMMUNROUTER_INTRA_OP_THREADS"])
    assert threads == int(api["resources"]["limits"]["cpu"]), "one onnxruntime thread per CPU of the limit"


def test_service_autoscaler_and_budget_select_the_deployment(manifests: dict[tuple[str, str], dict[str, Any]]) -> None:
    deployment = manifests[("Deployment", "kommunrouter")]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = manifests[("Service", "kommunrouter")]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= {port["name"] for port in api["ports"]}
    budget = manifests[("PodDisruptionBudget", "kommunrouter")]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    autoscaler = manifests[("HorizontalPodAutoscaler", "kommunrouter")]
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert autoscaler["spec"]["minReplicas"] == deployment["spec"]["replicas"]


def test_deployment_docs_name_files_that_exist() -> None:
    text = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w/.-])((?:deploy|docs|configs|models)/[\w./-]*\w|docker-compose[\w.]*\.yml)", text))
    assert {"docker-compose.yml", "docker-compose.scale.yml", "deploy/kubernetes"} <= named
    # models/ holds artifacts that training writes; the override file is one the reader is shown how to write.
    written_by_the_reader = {"docker-compose.override.yml"}
    missing = sorted(
        name for name in named - written_by_the_reader if not (REPO / name).exists() and not name.startswith("models/")
    )
    assert not missing, f"docs/deployment.md names files that do not exist: {missing}"


# --- the serving environment, built the way the Dockerfile builds it -------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def copy_into(source: Path, target: Path, patterns: list[IgnorePattern]) -> None:
    """COPY from the build context: a directory's files (less what .dockerignore leaves out) or one file."""
    for path in context_files(source, patterns):
        destination = target / path.relative_to(source) if source.is_dir() else target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)


def emulate_copy(instruction: Instruction, workdir: Path, patterns: list[IgnorePattern]) -> None:
    *sources, destination = shlex.split(instruction.value)
    assert not destination.startswith("/"), f"line {instruction.line}: COPY to an absolute path"
    for source in sources:
        target = workdir / destination
        if (REPO / source).is_file() and (destination.endswith("/") or len(sources) > 1):
            target = target / Path(source).name
        copy_into(REPO / source, target, patterns)


@dataclass
class BuiltImage:
    """The serving image laid out in a temporary directory: its WORKDIR, its venv and the environment it runs in."""

    workdir: Path
    venv: Path
    environment: dict[str, str]


def build_like_the_image(dockerfile: Dockerfile, patterns: list[IgnorePattern], root: Path) -> BuiltImage:
    """Run the build stage's COPY and RUN instructions (ARG VARIANT at its default, cpu) in ``root``, then the serve
    stage's COPYs from the build context; the image's paths (its WORKDIR and $VIRTUAL_ENV) move into ``root``."""
    build = dockerfile.stage("build")
    image_env = dockerfile.environment("build")
    image_workdir, image_venv = build.last("WORKDIR").value, image_env["VIRTUAL_ENV"]
    workdir, venv = root / "app", root / "venv"
    workdir.mkdir()
    # `python` of the base image: this interpreter's base installation (never a virtual environment's).
    base_python = root / "base-python"
    base_python.mkdir()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (base_python / "python").symlink_to(Path(sys.base_prefix) / "bin" / version)

    def localise(environment: Mapping[str, str], path: str) -> dict[str, str]:
        moved = {}
        for name, value in environment.items():
            value = value.replace(image_venv, str(venv))
            value = re.sub(rf"(?<![\w.-]){re.escape(image_workdir)}(?=/|$)", str(workdir), value)
            moved[name] = value.replace("$PATH", path) if name == "PATH" else value
        return moved

    host = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("KOMMUNROUTER_", "PYTHON")) and name not in {"VIRTUAL_ENV", "PATH"}
    }
    build_env = {**host, **localise(image_env, f"{base_python}:{os.environ['PATH']}")}
    build_args: dict[str, str] = {}  # a RUN sees the ARGs its stage declares (a bare one: the global default)
    for instruction in build.instructions:
        if instruction.keyword == "COPY":
            emulate_copy(instruction, workdir, patterns)
        elif instruction.keyword == "ARG":
            for name, value in key_values(instruction.value).items():
                build_args[name] = value or dockerfile.global_args.get(name, "")
        elif instruction.keyword == "RUN":
            # The instructions run on this machine, not in a container: they may only touch the work directory
            # and the virtual environment (reached through $VIRTUAL_ENV).
            assert not re.search(r"(^|[\s=\"'])/", instruction.value), (
                f"line {instruction.line}: an absolute path in a RUN of the build stage"
            )
            result = subprocess.run(
                ["/bin/sh", "-c", instruction.value],
                cwd=workdir,
                env={**build_env, **build_args},
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert result.returncode == 0, f"line {instruction.line} failed:\n{result.stdout}\n{result.stderr}"
        else:
            assert instruction.keyword in {"WORKDIR", "ENV"}, f"line {instruction.line}: {instruction.keyword}?"
    for instruction in dockerfile.stage("serve").instructions:
        if instruction.keyword == "COPY" and "from" not in instruction.flags:
            emulate_copy(instruction, workdir, patterns)
        elif instruction.keyword == "RUN":
            assert instruction.value.startswith("install -d"), "the serve stage only makes directories"
    return BuiltImage(workdir, venv, {**host, **localise(dockerfile.environment("serve"), os.environ["PATH"])})


def wait_until_healthy(server: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, f"the server stopped:\n{log_path.read_text(errors='replace')}"
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"no /healthz within 60 s:\n{log_path.read_text(errors='replace')}"
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.real_model
def test_serving_environment_built_like_the_image_serves_the_default_model(
    dockerfile: Dockerfile, ignore_patterns: list[IgnorePattern], tmp_path: Path
) -> None:
    if not (MODEL_DIR / "manifest.json").is_file():
        pytest.skip(MISSING_MODEL)
    image = build_like_the_image(dockerfile, ignore_patterns, tmp_path)
    environment = {**image.environment, "KOMMUNROUTER_OPEN_ACCESS": "true"}
    # The image's own default: a SQLite file in its var/ directory.
    assert environment["KOMMUNROUTER_DATABASE_URL"] == f"sqlite:///{image.workdir}/var/kommunrouter.db"
    no_torch = subprocess.run(
        [str(image.venv / "bin" / "python"), "-c", "import torch"], env=environment, capture_output=True, text=True
    )
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    # Both engines of `auto` are installed (the serving stage copies the build stage's venv).
    engines = subprocess.run(
        [str(image.venv / "bin" / "python"), "-c", "import onnxruntime, openvino"], env=environment, capture_output=True
    )
    assert engines.returncode == 0, engines.stderr

    serve = dockerfile.stage("serve")
    port = free_port()
    command = serve.last("CMD").exec_form()
    local_command = (
        command[2].replace("--host 0.0.0.0", "--host 127.0.0.1").replace(f"--port {SERVE_PORT}", f"--port {port}")
    )
    assert local_command != command[2]
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [*command[:2], local_command],
            cwd=image.workdir,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(server, base_url, log_path)
        healthcheck = serve.last("HEALTHCHECK").exec_form()
        probe = subprocess.run(
            [*healthcheck[:2], healthcheck[2].replace(f":{SERVE_PORT}/", f":{port}/")],
            env=environment,
            capture_output=True,
            timeout=10,
        )
        assert probe.returncode == 0, probe.stderr
        ready = httpx.get(f"{base_url}/readyz", timeout=5).json()
        assert ready["status"] == "ready" and all(ready["checks"].values()), ready
        answer = httpx.post(
            f"{base_url}/v1/classify",
            json={"text": "Gatlampan utanför Storgatan 12 är trasig och det är mörkt på kvällarna."},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["department"]["label"] in read_manifest(MODEL_DIR).tasks["department"].label_ids
        docs = httpx.get(f"{base_url}/docs", timeout=5)
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    # `docker stop` sends SIGTERM: the server shuts down cleanly, then ends by that signal (uvicorn re-raises it).
    log = log_path.read_text(errors="replace")
    assert server.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in log, log
