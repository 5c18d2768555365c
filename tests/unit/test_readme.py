"""Every code block of the README runs as written.

A ```python block is either a file of the repository, byte for byte (its first line
names the file: ``# tests/external_system/services/accounts.py``), that the tests run
for real, or a test that this module runs with pytest from the folder holding the
external system's packages. A ```sh block holds only commands that are run somewhere:
``make`` targets run by CI or whose recipe a test runs, ``docker compose`` on the compose
file that ``tests/unit/test_compose_file.py`` checks, and the commands with which
``tests/integration/test_external_system.py`` runs its system. The allowlists are read
from those files, not written here.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXTERNAL_TEST = ROOT / "tests" / "integration" / "test_external_system.py"
EXTERNAL_SYSTEM = ROOT / "tests" / "external_system"
MAX_LINES = 30


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # of the opening fence

    @property
    def named_file(self) -> str | None:
        """The repository file a python block claims to be, from its first line."""
        first = self.code.split("\n", 1)[0]
        match = re.fullmatch(r"# ([\w./-]+\.py)", first)
        return match.group(1) if match else None

    @property
    def body(self) -> str:
        """The code without the line naming its file."""
        return self.code.split("\n", 1)[1] if self.named_file else self.code


def blocks() -> list[Block]:
    found: list[Block] = []
    lines = README.read_text().splitlines(keepends=True)
    opened: tuple[str, int, list[str]] | None = None
    for number, line in enumerate(lines, 1):
        fence = re.match(r"^```(\S*)\s*$", line)
        if opened is None:
            if fence:
                opened = (fence.group(1), number, [])
            else:
                assert not line.startswith("```"), f"README.md:{number}: a fence with text after"
        elif fence and not fence.group(1):
            found.append(Block(opened[0], "".join(opened[2]), opened[1]))
            opened = None
        else:
            opened[2].append(line)
    assert opened is None, f"README.md:{opened[1]}: a block that is never closed"
    return found


def where(block: Block) -> str:
    return f"README.md:{block.line}"


# --- what the tests run, read from the tests themselves ----------------------------------


def _console_scripts() -> dict[str, str]:
    """module run by ``python -m`` -> the console script that runs the same (``saga``)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {target.split(":")[0]: name for name, target in project["scripts"].items()}


@dataclass(frozen=True)
class Invocations:
    """How ``test_external_system`` runs its system's processes and tools."""

    #: Console-script command lines, e.g. ``("saga", "run", "services.accounts")``.
    scripts: frozenset[tuple[str, ...]]
    #: ``python -m MODULE`` -> how many arguments the test gives it.
    modules: dict[str, int]
    #: Settings the test gives every process, with their values.
    environment: dict[str, str]


@cache
def external_invocations() -> Invocations:
    tree = ast.parse(EXTERNAL_TEST.read_text())
    processes: list[list[ast.expr]] = []  # PROCESSES: what ``python -m`` runs for each
    commands: list[list[ast.expr]] = []  # signups.run(...): tools, and errors on purpose
    environments: list[dict[str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            settings: dict[str, str] = {}
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    if isinstance(value, ast.List):
                        processes.append(list(value.elts))
                    elif isinstance(value, ast.Constant) and isinstance(value.value, str):
                        settings[key.value] = value.value
            environments.append(settings)
        elif isinstance(node, ast.Call):
            # signups.run("services.web", ...), or handed to asyncio.to_thread
            args = list(node.args)
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "run":
                commands.append(args)
            for i, arg in enumerate(args):
                if isinstance(arg, ast.Attribute) and arg.attr == "run":
                    commands.append(args[i + 1 :])
    scripts = _console_scripts()
    found_scripts: set[tuple[str, ...]] = set()
    modules: dict[str, int] = {}
    for argv in processes + commands:
        if not argv or not (isinstance(argv[0], ast.Constant) and isinstance(argv[0].value, str)):
            continue
        module = argv[0].value
        if module in scripts:
            if argv in processes:  # the processes of the system, not the failures it checks
                rest = [a.value for a in argv[1:] if isinstance(a, ast.Constant)]
                found_scripts.add((scripts[module], *map(str, rest)))
        else:
            modules[module] = len(argv) - 1
    assert found_scripts and modules, "the external system's test runs nothing?"
    # The settings every process gets: the largest literal of SAGA_* settings (the others
    # are one process's, e.g. an empty SAGA_DEFINITIONS to see the error).
    environment = max(
        (e for e in environments if e and all(k.startswith("SAGA_") for k in e)), key=len
    )
    return Invocations(frozenset(found_scripts), modules, environment)


def _external_file(module: str) -> Path | None:
    base = EXTERNAL_SYSTEM.joinpath(*module.split("."))
    for file in (base.with_suffix(".py"), base / "__init__.py"):
        if file.is_file():
            return file.resolve()
    return None


@cache
def external_files_run() -> frozenset[Path]:
    """Files of the external system its test runs: the modules of its processes and
    tools, its ``SAGA_DEFINITIONS``, and what they import of the system, transitively."""
    invocations = external_invocations()
    pending = [s[-1] for s in invocations.scripts if s[1:2] == ("run",)]
    pending += list(invocations.modules)
    pending.append(invocations.environment["SAGA_DEFINITIONS"].split(":")[0])
    found: set[Path] = set()
    while pending:
        file = _external_file(pending.pop())
        if file is None or file in found:
            continue
        found.add(file)
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                pending.append(node.module)
                pending += [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                pending += [alias.name for alias in node.names]
    return frozenset(found)


def _makefile_recipes() -> dict[str, list[str]]:
    recipes: dict[str, list[str]] = {}
    current: str | None = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        target = re.match(r"^([\w-]+):", line)
        if target:
            current = target.group(1)
            recipes[current] = []
        elif line.startswith("\t") and current is not None:
            recipes[current].append(line.strip())
        elif not line.strip():
            current = None
    return recipes


@cache
def make_targets_run() -> frozenset[str]:
    """Targets CI runs (``.ci/run``), and targets whose ``python -m`` a test runs."""
    ci = (ROOT / ".ci" / "run").read_text()
    run = set(re.findall(r"^\s*make (\w[\w-]*)\s*$", ci, re.M))
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    for target, recipe in _makefile_recipes().items():
        for line in recipe:
            module = re.search(r"python -m ([\w.]+)$", line)
            if module and re.search(rf'"-m",\s*"{re.escape(module.group(1))}"', tests):
                run.add(target)
    assert "test" in run, ".ci/run no longer runs make test?"
    return frozenset(run)


def compose_file_checked() -> Path:
    """The compose file ``tests/unit/test_compose_file.py`` checks."""
    from tests.unit.test_compose_file import COMPOSE

    return COMPOSE


@cache
def settings_variables() -> frozenset[str]:
    from saga.settings import Settings

    return frozenset(f"SAGA_{name.upper()}" for name in Settings.model_fields)


# --- the checks -------------------------------------------------------------------------


def split_command(line: str) -> tuple[dict[str, str], list[str]]:
    """The settings a shell line assigns (``export`` or leading ``NAME=value``), and
    the command it runs."""
    words = shlex.split(line, comments=True)
    if words[:1] == ["export"]:
        words = words[1:]
    assigned: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        assigned[name] = value
    return assigned, words


def check_command(line: str) -> str | None:
    """Why ``line`` is not a command that is run somewhere; None when it is."""
    assigned, words = split_command(line)
    for name, value in assigned.items():
        if name not in settings_variables():
            return f"{name} is not a setting of saga.settings.Settings"
        given = external_invocations().environment.get(name)
        if given is not None and value != given:
            return f"{name}={value}, but the external system's test runs with {given}"
    if not words:
        return None
    if words[0] == "make":
        if len(words) != 2 or words[1] not in make_targets_run():
            return f"{line!r}: make targets run by CI or a test: {sorted(make_targets_run())}"
        return None
    if words[:2] == ["docker", "compose"]:
        if "-f" in words or "--file" in words:
            return "docker compose on another file than the one the tests check"
        if (ROOT / "docker-compose.yml").resolve() != compose_file_checked().resolve():
            return "tests/unit/test_compose_file.py does not check docker-compose.yml"
        return None
    invocations = external_invocations()
    if tuple(words) in invocations.scripts:
        return None
    if words[:2] == ["python", "-m"] and len(words) > 2:
        expected = invocations.modules.get(words[2])
        if expected is not None and len(words) - 3 == expected:
            return None
    return (
        f"{line!r} is not a command tests/integration/test_external_system.py runs"
        f" (it runs {sorted(' '.join(s) for s in invocations.scripts)} and"
        f" python -m {sorted(invocations.modules)})"
    )


def exercised_by_tests(path: str) -> bool:
    """Whether the tests run the repository file ``path`` for real."""
    file = (ROOT / path).resolve()
    if file.is_relative_to(EXTERNAL_SYSTEM.resolve()):
        from tests.integration.test_external_system import TEMPLATE

        assert TEMPLATE.resolve() == EXTERNAL_SYSTEM.resolve(), "the system the test copies"
        return file in external_files_run()
    module = path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    package = module.rsplit(".", 1)[0]
    integration = "\n".join(
        p.read_text() for p in (ROOT / "tests" / "integration").glob("test_*.py")
    )
    return bool(
        re.search(rf"\b(from|import) ({re.escape(module)}|{re.escape(package)})\b", integration)
    )


def test_the_readme_has_only_python_and_sh_blocks() -> None:
    found = blocks()
    assert found, "no code blocks?"
    for block in found:
        assert block.language in ("python", "sh"), f"{where(block)}: ```{block.language}"


@pytest.mark.parametrize(
    "block",
    [b for b in blocks() if b.language == "python" and b.named_file],
    ids=lambda b: str(b.named_file),
)
def test_a_python_block_naming_a_file_is_that_file_and_tests_run_it(block: Block) -> None:
    assert block.named_file is not None
    path = ROOT / block.named_file
    assert path.is_file(), f"{where(block)}: no file {block.named_file}"
    assert block.body == path.read_text(), f"{where(block)}: differs from {block.named_file}"
    assert exercised_by_tests(block.named_file), f"no integration test runs {block.named_file}"


def test_the_service_and_the_saga_shown_are_under_30_lines() -> None:
    named = [b for b in blocks() if b.language == "python" and b.named_file]
    services = [b for b in named if "\nservice = Service(" in b.body]
    sagas = [b for b in named if "SagaDefinition(" in b.body]
    assert services and sagas, "the README shows a step service and a saga definition"
    for block in services[:1] + sagas[:1]:
        assert len(block.body.splitlines()) < MAX_LINES, f"{where(block)}: {block.named_file}"


def test_the_python_blocks_that_name_no_file_pass_as_tests(tmp_path: Path) -> None:
    loose = [b for b in blocks() if b.language == "python" and not b.named_file]
    assert loose, "the README shows a test of a saga"
    for number, block in enumerate(loose):
        assert re.search(r"^def test_|^async def test_", block.code, re.M), (
            f"{where(block)}: a python block is a repository file or a test"
        )
        (tmp_path / f"test_readme_block_{number}.py").write_text(block.code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGA_", "PYTHON"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=EXTERNAL_SYSTEM,  # its packages import, as from the folder holding them
        env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout


@pytest.mark.parametrize(
    "block", [b for b in blocks() if b.language == "sh"], ids=lambda b: f"line{b.line}"
)
def test_every_shell_command_is_one_that_is_run_somewhere(block: Block) -> None:
    for offset, line in enumerate(block.code.splitlines(), 1):
        why = check_command(line)
        assert why is None, f"README.md:{block.line + offset}: {why}"


def test_the_processes_of_one_block_have_a_health_port_each() -> None:
    from saga.settings import Settings

    for block in (b for b in blocks() if b.language == "sh"):
        exported = {"SAGA_HEALTH_PORT": str(Settings.model_fields["health_port"].default)}
        ports: list[str] = []
        for line in block.code.splitlines():
            assigned, command = split_command(line)
            if not command:
                exported.update(assigned)
            elif command[:2] in (["saga", "run"], ["saga", "coordinator"]):
                ports.append({**exported, **assigned}["SAGA_HEALTH_PORT"])
        assert len(ports) == len(set(ports)), f"{where(block)}: health ports {ports}"


def test_the_commands_shown_include_the_ones_a_reader_needs_first() -> None:
    commands = [
        " ".join(split_command(line)[1])
        for b in blocks()
        if b.language == "sh"
        for line in b.code.splitlines()
    ]
    assert commands[:2] == ["make demo", "make test"], "the first two commands"
    assert "saga coordinator" in commands
    assert any(c.startswith("docker compose up") for c in commands)
