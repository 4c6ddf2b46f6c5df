"""The workspace layout shared by every command.

    WORKSPACE/
      manifest.csv          the one dataset manifest (cxraug.manifest)
      processed/            dataset.npz + config.json from `preprocess`
      runs/NAME/            one training run each (config, logs, samples, checkpoints)
      synthetic/CLASS/      PNGs written by `generate`
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxraug.manifest import MANIFEST_NAME, Manifest, read_manifest, write_manifest


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: Path | str = ".") -> Workspace:
        return cls(Path(root).expanduser().resolve())

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def processed_dir(self) -> Path:
        return self.root / "processed"

    @property
    def dataset_path(self) -> Path:
        return self.processed_dir / "dataset.npz"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def synthetic_dir(self) -> Path:
        return self.root / "synthetic"

    def load_manifest(self) -> Manifest:
        return read_manifest(self.manifest_path)

    def save_manifest(self, manifest: Manifest) -> None:
        write_manifest(self.manifest_path, manifest)

    def relpath(self, p: Path) -> str:
        """Path as stored in the manifest: relative if inside the workspace, else absolute."""
        p = Path(p).resolve()
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return str(p)
