"""Build the QGIS plugin zip, or link a checkout into a QGIS profile for development.

    python scripts/build_plugin.py [--out dist/]        -> dist/camp_plugin.zip ("Install from ZIP")
    python scripts/build_plugin.py --link PLUGINS_DIR   -> PLUGINS_DIR/camp_plugin (symlinks, live edits)

The zip holds one folder, camp_plugin/, with the plugin code, metadata.txt (the repository root's,
the single source of metadata and version), resources/ (icons, QML styles) and the trainer core
bundled as camp_plugin/trainer, so the plugin runs without pip-installing the core. No tests, no
caches. Standard library only.
"""

from __future__ import annotations

import argparse
import configparser
import os
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "camp_plugin"
# Fields the official plugin repository (plugins.qgis.org) requires in metadata.txt.
REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                     "repository")
# What goes into the plugin folder besides camp_plugin/*: (source in the repo, name in the plugin).
EXTRAS = (("metadata.txt", "metadata.txt"), ("resources", "resources"), ("trainer", "trainer"),
          ("LICENSE", "LICENSE"))
SKIP_DIRS = {"__pycache__", ".pytest_cache", "tests"}
SKIP_SUFFIXES = {".pyc", ".pyo"}


def read_metadata(path: Path = ROOT / "metadata.txt") -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep camelCase keys
    parser.read(path, encoding="utf-8")
    general = dict(parser["general"]) if parser.has_section("general") else {}
    missing = [key for key in REQUIRED_METADATA if not general.get(key, "").strip()]
    if missing:
        raise SystemExit(f"{path}: missing required field(s) {', '.join(missing)}")
    icon = general.get("icon")
    if icon and not (ROOT / icon).is_file():
        raise SystemExit(f"{path}: icon={icon} does not exist (paths are relative to the plugin folder)")
    return general


def _files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    found = []
    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        found += [Path(folder) / f for f in sorted(files)
                  if Path(f).suffix not in SKIP_SUFFIXES and not f.startswith(".")]
    return found


def plugin_entries() -> list[tuple[Path, str]]:
    """(file on disk, name in the zip) for every file of the plugin folder."""
    entries = [(f, f"{PACKAGE}/{f.relative_to(ROOT / PACKAGE).as_posix()}") for f in _files(ROOT / PACKAGE)]
    for source, target in EXTRAS:
        path = ROOT / source
        if not path.exists():
            if source == "LICENSE":
                print("warning: no LICENSE at the repository root; plugins.qgis.org requires one", file=sys.stderr)
                continue
            raise SystemExit(f"{path} is missing")
        entries += [(f, f"{PACKAGE}/{target}/{f.relative_to(path).as_posix()}" if path.is_dir()
                     else f"{PACKAGE}/{target}") for f in _files(path)]
    return entries


def build_zip(out_dir: Path) -> Path:
    metadata = read_metadata()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PACKAGE}.zip"
    tmp = target.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, name in plugin_entries():
            archive.write(path, name)
    os.replace(tmp, target)  # never leave a half-written zip where "Install from ZIP" would find it
    print(f"built {target} ({metadata['name']} {metadata['version']}, {target.stat().st_size / 1e3:.0f} kB)")
    return target


def link_checkout(plugins_dir: Path) -> Path:
    """Make PLUGINS_DIR/camp_plugin a folder of symlinks into this checkout (edits show up live)."""
    read_metadata()
    folder = plugins_dir / PACKAGE
    folder.mkdir(parents=True, exist_ok=True)
    sources = [p for p in sorted((ROOT / PACKAGE).iterdir()) if p.name not in SKIP_DIRS]
    sources += [ROOT / s for s, _ in EXTRAS if (ROOT / s).exists()]
    for source in sources:
        link = folder / source.name
        if link.is_symlink() or link.is_file():
            link.unlink()
        link.symlink_to(source, target_is_directory=source.is_dir())
    print(f"linked {folder} -> {ROOT}; enable 'Camp Mapper' in Plugins > Manage and Install Plugins")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="folder for camp_plugin.zip (default: dist/)")
    parser.add_argument("--link", type=Path, metavar="PLUGINS_DIR",
                        help="instead of a zip, link this checkout into a QGIS profile's python/plugins folder")
    args = parser.parse_args(argv)
    if args.link:
        link_checkout(args.link)
    else:
        build_zip(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
