"""The audio files a user names: files, folders (recursive) and glob patterns, in any mix."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

# What libsndfile (with MPEG support) reads, by extension.
AUDIO_EXTENSIONS = frozenset({".wav", ".wave", ".au", ".snd", ".aif", ".aiff", ".aifc",
                              ".flac", ".ogg", ".oga", ".opus", ".mp3", ".caf", ".w64",
                              ".rf64", ".voc", ".sf", ".ircam", ".mat", ".pvf", ".xi",
                              ".htk", ".sd2", ".wv"})
_GLOB_CHARS = frozenset("*?[")


def is_litter(path: Path) -> bool:
    """Files a folder walk leaves out: macOS resource forks (``._*``) and hidden files."""
    return path.name.startswith(".")


def is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS and not is_litter(path)


@dataclass
class Inputs:
    """``files``: the audio files, each once, in the order named (folders sorted);
    ``errors``: ``{"file", "error"}`` for a name that is neither a file, a folder nor a
    matching pattern; ``ignored``: how many non-audio files folders and patterns held."""

    files: list[str] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    ignored: int = 0


def _walk(folder: Path) -> tuple[list[Path], int]:
    """Audio files under ``folder`` (sorted; symlinked folders followed once, hidden ones
    left out) and the number of other files."""
    audio, other = [], 0
    visited: set[str] = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:  # a link back up the tree
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            p = Path(root) / name
            if name.startswith(".") or not p.is_file():
                continue
            if is_audio(p):
                audio.append(p)
            else:
                other += 1
    return sorted(audio), other


def expand_inputs(names: Iterable[str]) -> Inputs:
    """Resolve ``names``: a file is taken as it is (libsndfile decides whether it can read
    it); a folder gives every audio file under it (recursive, by extension, litter and
    hidden files left out); a name with ``* ? [`` is a glob pattern (``**`` recursive) whose
    files and folders are taken the same way."""
    out = Inputs()
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = str(p.resolve())
        if key not in seen:
            seen.add(key)
            out.files.append(str(p))

    def folder(path: Path) -> int:
        audio, other = _walk(path)
        out.ignored += other
        for p in audio:
            add(p)
        return len(audio)

    for name in names:
        name = str(name)
        path = Path(name).expanduser()
        if path.is_dir():
            if not folder(path):
                out.errors.append({"file": name, "error": "folder holds no audio files "
                                   f"(extensions: {', '.join(sorted(AUDIO_EXTENSIONS))})"})
        elif path.is_file():
            add(path)
        elif _GLOB_CHARS & set(name):
            matches = sorted(glob.glob(str(path), recursive=True))
            before = len(out.files)
            for m in map(Path, matches):
                if m.is_dir():
                    folder(m)
                elif is_audio(m):
                    add(m)
                elif m.is_file():
                    out.ignored += 1
            if len(out.files) == before:
                out.errors.append({"file": name, "error": "pattern matched no audio file"})
        else:
            out.errors.append({"file": name, "error": "no such file or folder"})
    return out


def file_names(value) -> list[str]:
    """A ``files=`` config value (one string or a list) as a list of names."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def inputs_of(value) -> Inputs:
    """:func:`expand_inputs` of a ``files=`` config value; an empty value is an error that
    says what to give."""
    from .errors import UserError

    names = file_names(value)
    if not names:
        raise UserError("files=[...] is required: files, folders or glob patterns, e.g. "
                        "files=[song.mp3,/music,'/in/**/*.flac']")
    return expand_inputs(names)
