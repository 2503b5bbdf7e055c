"""Watched policy files: model.conf and the CSV files of a directory, served alongside the database's lines.

`changed()` compares a fingerprint (path, size, mtime) with the one last *attempted*, so a bad edit is refused
once, logged, and not retried until the files change again. `load()` lints before anything is built: a file
with an error never reaches the engine, and the previous policy keeps serving.
"""

from __future__ import annotations

from pathlib import Path

from gateway.policy.lint import lint
from gateway.policy.rules import PolicyError, Rule, parse_files

Fingerprint = tuple[tuple[str, int, int], ...]


class PolicyFiles:
    def __init__(self, model_path: Path, directory: Path) -> None:
        self.model_path = model_path
        self.directory = directory
        self._seen: Fingerprint | None = None

    def paths(self) -> list[Path]:
        return sorted(self.directory.glob("*.csv"))

    def fingerprint(self) -> Fingerprint:
        entries = []
        for path in [self.model_path, *self.paths()]:
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((str(path), stat.st_size, stat.st_mtime_ns))
        return tuple(entries)

    def changed(self) -> bool:
        return self.fingerprint() != self._seen

    def load(self) -> tuple[str, tuple[Rule, ...]]:
        """(model text, lines) after a clean lint; PolicyError listing the errors otherwise."""
        self._seen = self.fingerprint()
        paths = self.paths()
        errors = [finding for finding in lint(self.model_path, paths) if finding.severity == "error"]
        if errors:
            shown = "; ".join(str(error) for error in errors[:5])
            more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
            raise PolicyError(f"policy files refused: {shown}{more}")
        return self.model_path.read_text(encoding="utf-8"), tuple(parse_files(paths))
