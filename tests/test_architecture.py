"""Conventions the layout depends on: data flows one way, catalogs keep their schema, CI runs the README."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from vramwise.catalog import gpus, models

SRC = Path(__file__).resolve().parents[1] / "src" / "vramwise"
ROOT = SRC.parents[1]

# Floors, ground up: _lazy, errors, units < files < catalog, workload < spec < formats < estimate (inference)
# < estimate.train < engines (serving as vLLM, SGLang, llama.cpp run it: inference only) < fit, verify < report < app
# < cli. A part never imports a part on its floor or above (fit and verify are siblings; estimate's inference side
# never reaches training). A part is a module (`x.py`) or a package (`x/`), whichever exists: the rules survive
# turning one into the other. Every part of src/vramwise must be listed.
_ALL = (
    "_lazy", "errors", "units", "files", "catalog", "workload", "spec", "formats", "estimate", "estimate.train",
    "engines", "fit", "verify", "report", "app", "cli", "configs", "web", "mcpserver",
)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "_lazy": tuple(p for p in _ALL if p != "_lazy"),  # the PEP 562 loader of the facades: imports nothing of ours
    "errors": tuple(p for p in _ALL if p != "errors"),
    "units": tuple(p for p in _ALL if p != "units"),
    "files": tuple(p for p in _ALL if p not in ("files", "errors")),  # a user's local file read safely
    "catalog": ("workload", "spec", "formats", "estimate", "engines", "fit", "verify", "report", "app", "cli",
                "configs"),
    "workload": ("catalog", "spec", "formats", "estimate", "engines", "fit", "verify", "report", "app", "cli",
                 "configs"),
    "spec": ("workload", "formats", "estimate", "engines", "fit", "verify", "report", "app", "cli"),
    "formats": ("workload", "estimate", "engines", "fit", "verify", "report", "app", "cli"),
    "estimate": ("estimate.train", "engines", "fit", "verify", "report", "app", "cli"),
    "estimate.train": ("engines", "fit", "verify", "report", "app", "cli"),
    "engines": ("estimate.train", "fit", "verify", "report", "app", "cli"),  # serving: inference only
    "fit": ("verify", "report", "app", "cli"),
    "verify": ("fit", "report", "app", "cli"),
    "report": ("app", "cli"),
    "app": ("cli",),
    # issue 15's importers and emitters: framework configs read into options, setups written back; above workload and
    # catalog (and files), below app; never the model description or the estimators
    "configs": ("spec", "formats", "estimate", "estimate.train", "engines", "fit", "verify", "report", "app", "cli"),
    "cli": (),  # the top floor: listed so that a rename or an empty cli/ still fails the existence check
    # issue 16: the page and its API, floor 11 beside cli/: the application layer and the renderers only, and of the
    # command line its one option table (ONLY_THROUGH), so that every answer is the CLI's --json document
    "web": tuple(p for p in _ALL if p not in ("web", "app", "report", "errors", "units", "_lazy", "cli")),
    # issue 16: the MCP server, floor 11 beside cli/ and web/: the same parts as web, never web itself
    "mcpserver": tuple(p for p in _ALL if p not in ("mcpserver", "app", "report", "errors", "units", "_lazy", "cli")),
}
# nothing below the front ends imports one (cli imports a server only in the command that starts it: SERVER_COMMANDS)
for _part, _banned in FORBIDDEN.items():
    if "cli" in _banned:
        FORBIDDEN[_part] += tuple(f for f in ("web", "mcpserver") if f not in _banned)
# Narrower than the floors: a part that may import another may reach only these of its modules. report renders
# verify's result types (verify/compare.py, torch-free), never the orchestration that drives torch (twin, trace, live).
ONLY_THROUGH: dict[tuple[str, str], tuple[str, ...]] = {("report", "verify"): ("verify.compare",)}
ONLY_THROUGH[("web", "cli")] = ("cli.options",)  # the option table and parse_options, never a command's module
ONLY_THROUGH[("mcpserver", "cli")] = ("cli.options",)  # the same for the MCP server
# the servers (floor 11) are started by their own command only, which imports them lazily
SERVER_COMMANDS = {"web": "cli/web.py", "mcpserver": "cli/mcp.py"}


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved; `from vramwise import x` too)."""
    tree = ast.parse(path.read_text())
    package = ".".join(("vramwise", *path.relative_to(SRC).parent.parts))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from vramwise import app` imports vramwise.app
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def _part_files(part: str) -> list[Path]:
    """The .py files of a part (module or package), without those of a more specific part (estimate.train)."""
    base = SRC.joinpath(*part.split("."))
    module, package = base.with_suffix(".py"), base
    assert not (module.is_file() and package.is_dir()), f"{part}: both {module.name} and {package.name}/ exist"
    if module.is_file():
        return [module]
    files = sorted(package.rglob("*.py")) if package.is_dir() else []
    inner = [SRC.joinpath(*p.split(".")) for p in FORBIDDEN if p.startswith(part + ".")]
    return [f for f in files if not any(f.is_relative_to(i) for i in inner)]


def _hits(module: str, parts: tuple[str, ...]) -> bool:
    return any(module == f"vramwise.{p}" or module.startswith(f"vramwise.{p}.") for p in parts)


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_lower_stages_never_import_higher_ones(part: str) -> None:
    files = _part_files(part)
    # No vacuous pass: a renamed, moved or emptied part fails here instead of checking nothing.
    assert files, f"src/vramwise/{part.replace('.', '/')}(.py|/) is missing or has no .py file"
    for path in files:
        bad = {m for m in _imports(path) if _hits(m, FORBIDDEN[part])}
        assert not bad, f"{path.relative_to(SRC)} ({part}) imports {sorted(bad)}"


@pytest.mark.parametrize(("part", "other"), sorted(ONLY_THROUGH))
def test_parts_reach_others_only_through_their_named_modules(part: str, other: str) -> None:
    allowed = ONLY_THROUGH[(part, other)]
    for name in allowed:  # no vacuous pass: the named modules exist
        assert SRC.joinpath(*name.split(".")).with_suffix(".py").is_file(), f"{name} is missing"
    files = _part_files(part)
    assert files, f"src/vramwise/{part.replace('.', '/')}(.py|/) is missing or has no .py file"
    for path in files:
        bad = {m for m in _imports(path) if _hits(m, (other,)) and not _hits(m, allowed)}
        assert not bad, f"{path.relative_to(SRC)} ({part}) imports {sorted(bad)}: only {', '.join(allowed)}"


@pytest.mark.parametrize("server", sorted(SERVER_COMMANDS))
def test_the_command_line_reaches_a_server_only_through_its_command(server: str) -> None:
    for path in _part_files("cli"):
        if path.relative_to(SRC).as_posix() == SERVER_COMMANDS[server]:
            continue
        bad = {m for m in _imports(path) if _hits(m, (server,))}
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}: only {SERVER_COMMANDS[server]} starts it"


def test_every_part_of_the_package_has_a_layering_rule() -> None:
    # A new package (say web/) must say where it sits before it can import anything.
    entries = {p.stem for p in SRC.glob("*.py")} | {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    unlisted = sorted(entries - set(FORBIDDEN) - {"__init__", "__main__"})
    assert not unlisted, f"add layering rules for {unlisted} to FORBIDDEN"


def test_the_facade_and_main_import_downwards_only() -> None:
    # The lazy facade (vramwise/__init__.py) exposes the library, never the command line; __main__ only runs it.
    assert not {m for m in _imports(SRC / "__init__.py") if _hits(m, ("cli",))}
    main = {m for m in _imports(SRC / "__main__.py") if m.startswith("vramwise.")}
    assert main <= {"vramwise.cli", "vramwise.cli.main"}, main


def test_core_imports_no_torch() -> None:
    for path in SRC.rglob("*.py"):
        if "verify" in path.parts:
            continue
        heavy = {m for m in _imports(path) if m.split(".")[0] in ("torch", "transformers", "peft", "numpy")}
        assert not heavy, f"{path.relative_to(SRC)} imports {heavy}"


def test_public_names_load_and_infer_imports_no_training_code() -> None:
    import subprocess
    import sys

    import vramwise

    assert sorted(vramwise.__all__) == sorted(vramwise._EXPORTS)
    for name in vramwise.__all__:
        assert getattr(vramwise, name) is not None
    # A fresh `vramwise infer` loads the inference estimator only (its start-up time is a fit-issue target), and
    # none of the readers of hub ids, safetensors or GGUF files (imported inside the functions that need them).
    probe = (
        "import contextlib, io, sys\n"
        "from vramwise.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['infer', 'llama-2-7b'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('vramwise.estimate.train', 'vramwise.fit', "
        "'vramwise.verify', 'vramwise.workload.train', 'vramwise.estimate.textbook', 'vramwise.app.fitting', "
        "'vramwise.app.sweep', 'torch', 'huggingface_hub', 'safetensors', 'gguf', 'httpx', 'numpy', "
        "'vramwise.mcpserver', 'mcp'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_model_catalog_schema() -> None:
    raw = tomllib.loads(resources.files("vramwise.catalog").joinpath("models.toml").read_text())
    assert len(raw) >= 25
    for name, entry in raw.items():
        assert re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", name), name
        assert set(entry) <= {"hf_id", "config", "nulls"}, name
        assert "/" in entry["hf_id"] and entry["config"]["model_type"], name
    for required in ("llama-2-7b", "llama-3.1-70b", "mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3", "gpt-oss-20b"):
        assert required in models()


def test_gpu_catalog_schema() -> None:
    table = gpus()
    for required in (
        "h100-80gb",
        "h200",
        "a100-40gb",
        "a100-80gb",
        "l40s",
        "a10",
        "l4",
        "rtx-3090",
        "rtx-4090",
        "rtx-5090",
        "v100-16gb",
        "v100-32gb",
        "t4",
        "mi300x",
        "b200",
    ):
        assert required in table
    for gpu in table.values():
        # from an 8 GB laptop GPU to a 512 GB Mac's Metal working set
        assert 4 * 2**30 < gpu.memory_bytes <= 512 * 2**30 and gpu.label


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"<!-- test-command -->\s*```(?:bash|sh)?\n(.+?)\n```", readme, re.S)
    assert command, "README must mark its test command with <!-- test-command -->"
    assert command.group(1).strip() in (ROOT / ".ci" / "run").read_text()
