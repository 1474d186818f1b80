"""Reproduce suites: which recipes and seeds make up `make reproduce-<dataset>` and `make slurm-<dataset>`.

A suite file ``recipes/suites/<name>.yaml`` lists recipe names and seeds; methods add their recipes to the
list of each dataset they cover. A suite kept elsewhere (a plugin's) may also list recipe files relative to
itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from vidbench.config import RECIPES_DIR, find_recipe
from vidbench.errors import ConfigError

SUITES_DIR = RECIPES_DIR / "suites"


@dataclass(frozen=True)
class Suite:
    name: str
    recipes: tuple[str, ...]
    seeds: tuple[int, ...]
    zero_shot: tuple[str, ...] = ()  # recipes also tested untrained (`test --zero-shot`), each seed

    def runs(self, seeds: list[int] | None = None) -> list[tuple[str, int]]:
        """Every (recipe, seed) pair, recipe-major, with ``seeds`` overriding the suite's own."""
        return [(r, s) for r in self.recipes for s in (seeds if seeds is not None else self.seeds)]


def list_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str) -> Suite:
    path = Path(name_or_path)
    if not path.exists():
        path = SUITES_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise ConfigError(f"suite '{name_or_path}' not found; choose one of {list_suites()} or pass a YAML path")
    raw = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(raw, dict) or set(raw) - {"recipes", "seeds", "zero_shot"} or not raw.get("recipes"):
        raise ConfigError(
            f"{path}: a suite holds 'recipes' (a non-empty list), 'seeds' and optionally 'zero_shot' (recipes "
            "also tested untrained)"
        )

    def located(recipe: str) -> str:
        beside = path.parent / str(recipe)  # a recipe file named relative to a suite kept outside recipes/
        if beside.suffix in {".yaml", ".yml"} and beside.is_file():
            recipe = str(beside.resolve())
        find_recipe(recipe)  # fail early, naming the recipe
        return recipe

    recipes = tuple(located(r) for r in raw["recipes"])
    zero_shot = tuple(located(r) for r in raw.get("zero_shot") or ())
    return Suite(path.stem, recipes, tuple(int(s) for s in raw.get("seeds", [0])), zero_shot)
