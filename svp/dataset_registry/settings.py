"""Settings of the dataset registry: the only reader of its ``SVP_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from svp.common import settings as s

DEFAULT_REGISTRY = "datasets.yaml"


@dataclass(frozen=True)
class RegistrySettings:
    registry: tuple[str, ...] = s.env(
        "SVP_DATASET_REGISTRY", (), s.path_list,
        "registry YAML file(s), `os.pathsep`-separated; unset: `./datasets.yaml` if present")
    bad_rows: str = s.env(
        "SVP_BAD_ROWS", "error", s.choice("error", "skip"),
        "`error`: any bad row stops the run with the full report; `skip`: bad rows are "
        "dropped and counted")

    image_check: str = s.env(
        "SVP_IMAGE_CHECK", "full", s.choice("full", "header"),
        "how images are checked before training: `full` decodes each as training will (a "
        "truncated file is found), `header` reads only sizes and modes (faster, for a "
        "dataset already checked); both apply the bomb, sample-width and aspect-ratio limits")

    def image_checker(self, environ=None):
        """The :class:`~svp.dataset_registry.registry.ImageChecker` of this run: its check
        depth, and the Qwen processors' pixel budget of this environment (``MAX_PIXELS`` ...)
        for the aspect-ratio check."""
        from svp.dataset_registry.registry import ImageChecker

        return ImageChecker(budgets=s.qwen_budgets(environ), full=self.image_check == "full")

    @property
    def skip_bad_rows(self) -> bool:
        return self.bad_rows == "skip"

    def registry_files(self, cwd: Path | None = None) -> list[Path]:
        """The files to read: the variable's, or ``./datasets.yaml`` when present."""
        if self.registry:
            return [Path(p).expanduser().resolve() for p in self.registry]
        default = (cwd or Path.cwd()) / DEFAULT_REGISTRY
        return [default.resolve()] if default.is_file() else []


    def check_files(self) -> None:
        """Every registry file exists (the recipes call this before launching)."""
        files = self.registry_files()
        if not files:
            raise s.SettingsError("no dataset registry: set SVP_DATASET_REGISTRY or put "
                                  f"{DEFAULT_REGISTRY} in the working directory")
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise s.SettingsError(f"SVP_DATASET_REGISTRY: registry file not found: "
                                  f"{', '.join(missing)}")


def load(environ=None) -> RegistrySettings:
    return s.load(RegistrySettings, "dataset_registry", environ)
