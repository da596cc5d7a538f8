"""The real distribution: the wheel built from this checkout, installed non-editable into a fresh virtual
environment outside the checkout, run from an empty directory.

The fresh environment gets its dependencies (torch ...) from the test environment through a path
file, so nothing is downloaded twice; the attnlens it imports is the wheel's, nothing from the checkout.
"""
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import DATA, ROOT, SHOTS, docs_operations_rendered, guarded_page
from tests.serving import running_server


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the sources (as the Dockerfile's first stage): a build/ folder an earlier build left in
    the checkout would otherwise lend the wheel files its package list no longer names."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("app", "blocks", "static", "templates"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
                   check=True, capture_output=True, text=True)
    (built,) = out.glob("attnlens-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_python(wheel, tmp_path_factory) -> str:
    venv = tmp_path_factory.mktemp("fresh-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # the test environment's packages (torch, fastapi ...) without its editable attnlens: a plain path
    # line does not run that directory's own .pth files, where the editable finder is registered
    Path(site, "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, text=True)
    return python


def test_wheel_installs_one_top_level_package_with_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"attnlens", wheel.name.split("-py")[0] + ".dist-info"}
    for needed in ("attnlens/blocks/acmix.py", "attnlens/static/page.js", "attnlens/static/samples/cat.jpg",
                   "attnlens/static/swagger/swagger-ui-bundle.js", "attnlens/static/swagger/LICENSE",
                   "attnlens/templates/index.html", "attnlens/templates/docs.html",
                   "attnlens/data/lite0_blocks.safetensors", "attnlens/data/imagenet_classes.txt",
                   "attnlens/static/dataset.js"):
        assert needed in names
    # every module of the source tree is in the wheel (a package left off the list would be missing)
    for folder, prefix in ((ROOT / "app", "attnlens"), (ROOT / "blocks", "attnlens/blocks")):
        for module in folder.rglob("*.py"):
            assert f"{prefix}/{module.relative_to(folder).as_posix()}" in names, module


def test_imports_come_from_the_wheel(fresh_python, tmp_path):
    script = ("import attnlens, attnlens.blocks, importlib.util as u; "
              "from attnlens.blocks import ACmix, CA, CB2d, capture; "
              "print(attnlens.__file__); print(attnlens.__version__); "
              "print(u.find_spec('app'), u.find_spec('blocks'))")
    lines = subprocess.run([fresh_python, "-c", script], cwd=tmp_path, check=True, capture_output=True,
                           text=True).stdout.splitlines()
    assert "site-packages" in lines[0] and not lines[0].startswith(str(ROOT))
    version = subprocess.run([fresh_python, "-m", "attnlens", "--version"], cwd=tmp_path, check=True,
                             capture_output=True, text=True).stdout
    assert version.strip() == f"attnlens {lines[1]}"
    assert lines[2] == "None None"  # no generic top-level names installed


def test_served_from_an_empty_directory(fresh_python, tmp_path, browser):
    with running_server(python=fresh_python, cwd=tmp_path) as (base, _):
        page = httpx.get(f"{base}/")
        assert page.status_code == 200
        assets = set(re.findall(r'(?:src|href|data-src)="(/static/[^"]+)"', page.text))
        assert len(assets) >= 6  # stylesheet, script, favicon, sample photos
        docs = httpx.get(f"{base}/docs")
        assert docs.status_code == 200
        assets |= set(re.findall(r'(?:src|href)="(/static/[^"]+)"', docs.text))
        for asset in sorted(assets):
            assert httpx.get(base + asset).status_code == 200, asset
        with (DATA / "chelsea.jpg").open("rb") as image:
            analysis = httpx.post(f"{base}/api/v1/analyze", files={"file": image}, timeout=60)
        assert analysis.status_code == 200 and "cat" in analysis.json()["predictions"][0]["label"]
        with guarded_page(browser, base, "/docs") as docs_page:
            docs_operations_rendered(docs_page, base)
            docs_page.screenshot(path=str(SHOTS / "docs-from-wheel.png"))
            assert docs_page.problems == [] and docs_page.off_loopback == []
