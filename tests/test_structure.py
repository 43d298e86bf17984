"""scripts/check_structure.py, the gate scripts/test.sh runs on bgremove/: it fails on an import circle (one hidden
inside a function included) and on a module over the line limit, and passes a package without either."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def check(package: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(ROOT / "scripts" / "check_structure.py"), str(package), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=package.parent, timeout=120)


def make_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "shapes"
    for name, text in {"__init__.py": "", **files}.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


def test_a_clean_package_passes(tmp_path: Path) -> None:
    package = make_package(
        tmp_path,
        {
            "base.py": "X = 1\n",
            "round.py": "from shapes.base import X\n",
            "sub/__init__.py": "",
            "sub/square.py": "import shapes.round\n",
        },
    )
    done = check(package, "--max-lines", "5")
    assert done.returncode == 0, done.stderr
    assert "shapes: 5 modules, no import circle, none over 5 lines" in done.stdout
    assert not (tmp_path / ".grimp_cache").exists()  # the gate leaves nothing behind in the tree it checks


def test_a_circle_hidden_in_a_function_fails(tmp_path: Path) -> None:
    package = make_package(
        tmp_path,
        {
            "cli.py": "import json\n\n\ndef main():\n    from shapes.client import run\n    return run()\n",
            "client.py": "from shapes.cli import main\n\n\ndef run():\n    return 0\n",
            "alone.py": "from shapes import cli\n",
        },
    )
    done = check(package)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "import circle: shapes.cli -> shapes.client -> shapes.cli (shapes.cli:5, shapes.client:1)"
    ]


def test_a_module_over_the_limit_fails(tmp_path: Path) -> None:
    package = make_package(tmp_path, {"long.py": "X = 1\n" * 11, "short.py": "X = 1\n" * 10})
    done = check(package, "--max-lines", "10")
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["shapes/long.py has 11 lines (the limit is 10): split it by concept"]
