"""Class names and prompt templates of zero-shot classification read from files.

A `.txt` file holds one entry per line (blank lines and lines starting with "#" are
skipped); a `.json` file holds a list of strings; a `.py` file holds open_clip-style
lists, e.g. `TEMPLATES = (lambda c: f"a photo of a {c}.", ...)` or a list of strings,
read without running the file (templates come back as "a photo of a {}.").
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from crossjax.errors import ConfigError


def _from_python(path: Path, field: str) -> list[str]:
    """The first top-level list/tuple assignment of strings or `lambda c: f"...{c}..."`."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError) as e:
        raise ConfigError(f"{field}: {path} is not readable Python ({e})") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List | ast.Tuple):
            items = [_python_entry(e) for e in node.value.elts]
            if items and all(i is not None for i in items):
                return items
    raise ConfigError(
        f"{field}: {path} has no top-level list of strings or of lambda c: f'...{{c}}...'"
    )


def _python_entry(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Lambda) and len(node.args.args) == 1:
        arg, body = node.args.args[0].arg, node.body
        if isinstance(body, ast.JoinedStr):
            parts = []
            for value in body.values:
                if isinstance(value, ast.Constant):
                    parts.append(str(value.value).replace("{", "{{").replace("}", "}}"))
                elif isinstance(value.value, ast.Name) and value.value.id == arg:
                    parts.append("{}")
                else:
                    return None
            return "".join(parts)
    return None


def read_string_list(path: str, field: str) -> list[str]:
    """The non-empty list of strings in `path` (.txt, .json or .py; see the module doc);
    a one-line ConfigError naming `field` for a missing file, a bad format or no entries."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{field}={path!r} does not exist; give a .txt, .json or .py file")
    if file.suffix == ".json":
        try:
            items = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{field}: {path} is not valid JSON ({e})") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{field}: {path} must hold a JSON list of strings")
    elif file.suffix == ".py":
        items = _from_python(file, field)
    else:
        lines = file.read_text(encoding="utf-8").splitlines()
        items = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    if not items:
        raise ConfigError(f"{field}: {path} lists nothing; write one entry per line")
    return items
