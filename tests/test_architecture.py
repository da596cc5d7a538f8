"""The house as SPEC section 1 draws it: areas whose imports run one way, read from the source with ``ast``.

server -> analysis -> models -> blocks; evaluation -> analysis, models, blocks; server -> evaluation (the datasets it
serves for browsing); training -> evaluation, models, blocks;
nothing imports server but the CLI;
blocks imports nothing of attnlens (nor of the web).
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {  # area -> areas it may import
    "blocks": set(),
    "models": {"blocks"},
    "analysis": {"models", "blocks"},
    "evaluation": {"analysis", "models", "blocks"},
    "training": {"evaluation", "models", "blocks"},
    "server": {"evaluation", "analysis", "models", "blocks"},
    "cli": {"server", "analysis", "models", "training", "evaluation", "blocks"},
}


def area_of(path: Path) -> str:
    if path.is_relative_to(ROOT / "blocks"):
        return "blocks"
    part = path.relative_to(ROOT / "app").parts[0]
    return {"cli.py": "cli", "__main__.py": "cli"}.get(part, part)


def imported_areas(path: Path, source: str | None = None) -> set[str]:
    """The attnlens areas the module at ``path`` imports (absolute ``attnlens.x`` and relative ``..x``
    imports); ``source``: its text, if not read from ``path``."""
    package = ["attnlens", "blocks"] if area_of(path) == "blocks" else \
        ["attnlens", *path.relative_to(ROOT / "app").parent.parts]
    found = set()
    for node in ast.walk(ast.parse(source if source is not None else path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
                if not node.module:
                    names = [".".join(base + [alias.name]) for alias in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "attnlens" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] in ("app", "blocks") and name != "blocks":
                found.add(f"top-level {parts[0]}")
    return found


def test_imports_run_one_way():
    problems = []
    for path in sorted([*(ROOT / "app").rglob("*.py"), *(ROOT / "blocks").rglob("*.py")]):
        area = area_of(path)
        areas = {"server", "analysis", "models", "training", "evaluation", "blocks", "cli"}
        for imported in imported_areas(path) - {area}:
            if imported in areas and imported not in ALLOWED.get(area, areas):
                problems.append(f"{path.relative_to(ROOT)} ({area}) imports {imported}")
            if imported.startswith("top-level"):
                problems.append(f"{path.relative_to(ROOT)} imports the {imported} package, not attnlens")
    assert problems == []


def test_blocks_know_nothing_of_the_web():
    web = ("fastapi", "starlette", "uvicorn", "jinja2", "pydantic", "matplotlib")
    for path in (ROOT / "blocks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in web for n in names), path


def test_the_checker_sees_wrong_arrows():
    """The checker itself can fail: a models module importing the server, absolutely or relatively."""
    module = ROOT / "app" / "models" / "loading.py"
    assert imported_areas(module, "from attnlens.server import create_app\n") == {"server"}
    assert imported_areas(module, "from ..server.app import create_app\n") == {"server"}
    assert imported_areas(module, "import blocks.acmix\n") == {"top-level blocks"}
    assert "server" not in ALLOWED["models"]
