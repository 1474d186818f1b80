"""Links in the leaderboard that work where the file is read.

The leaderboard is committed; ``runs/`` is not. A link is written only to a file that exists now and
will travel with the leaderboard: a recipe under ``recipes/``, a plot under the output folder, and a run
folder only when it is inside a git work tree and not ignored there (or when the caller says so). In a
folder git does not know about, run folders are not linked: nothing says they will be kept.
"""

from __future__ import annotations

import os
import re
import subprocess
from functools import cache
from pathlib import Path

from vidbench.config import find_recipe
from vidbench.errors import ConfigError

_LINK = re.compile(r"\]\(<?([^)>\s]+)>?\)")


def relative_link(target: Path, out_dir: Path) -> str:
    """``target`` relative to ``out_dir`` in POSIX form, angle-bracketed when it has spaces or brackets."""
    rel = Path(os.path.relpath(Path(target).resolve(), Path(out_dir).resolve())).as_posix()
    return f"<{rel}>" if re.search(r"[\s()<>]", rel) else rel


@cache
def _git_root(folder: Path) -> Path | None:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=folder, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(proc.stdout.strip()).resolve() if proc.returncode == 0 else None


def travels_with_git(path: Path) -> bool:
    """True when ``path`` exists inside a git work tree and git does not ignore it (it can be committed)."""
    path = Path(path).resolve()
    if not path.exists():
        return False
    folder = path if path.is_dir() else path.parent
    root = _git_root(folder)
    if root is None:
        return False
    try:
        proc = subprocess.run(
            ["git", "check-ignore", "-q", str(path)], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 1  # 0: ignored, 1: not ignored, 128: error


def recipe_link(recipe: str, out_dir: Path) -> str:
    """``[recipe](../recipes/.../recipe.yaml)``, or the bare name when no recipe file has that name."""
    try:
        path = find_recipe(recipe)
    except ConfigError:
        return f"`{recipe}`"
    return f"[{recipe}]({relative_link(path, out_dir)})"


def run_links(run_dir: Path, seed: int, config: str | None, logs: str | None, out_dir: Path, *, link: bool) -> str:
    """``s0: [config](...) [logs](...)`` for a run folder that is linked; ``s0`` alone otherwise."""
    parts = []
    if link:
        for name, rel in (("config", config), ("logs", logs), ("result", "result.json")):
            if rel and (run_dir / rel).exists():
                parts.append(f"[{name}]({relative_link(run_dir / rel, out_dir)})")
    return f"s{seed}" + (": " + " ".join(parts) if parts else "")


def dead_links(markdown: str, base: Path) -> list[str]:
    """Relative link targets in ``markdown`` that do not exist under ``base`` (URLs and anchors ignored)."""
    dead = []
    for target in _LINK.findall(markdown):
        if re.match(r"[a-z]+://|#|mailto:", target):
            continue
        if not (Path(base) / target).exists():
            dead.append(target)
    return dead


__all__ = ["dead_links", "recipe_link", "relative_link", "run_links", "travels_with_git"]
