"""The configuration reference, rendered from ``conf/`` so that it cannot drift from the configs.

Every YAML file under ``conf/`` is an option of its group (``conf/data/imagenet.yaml`` is
``data=imagenet``). A file is read twice: by PyYAML for the values and line by line for the
comments, which the configs put above the key they describe:

- the file's first comment block describes the option;
- the comment block directly above a key (and a comment at the end of its line) describes the key;
- a key without its own comment is still described when a comment covers it by name: the comment
  of the key that starts its run of uncommented keys (a comment above ``a`` that names ``b``
  describes ``b`` right below ``a``), of the mapping that holds it, or the file's description (``mean/std/interpolation/crop_pct ...``);
- the ``Args:`` of a vitrain ``_target_``'s docstring (or of its vitrain base classes') describe
  that mapping's remaining keys;
- a key an option sets over the option it extends is described there (``trainer/ddp`` sets
  ``strategy`` of ``trainer/default``), and so is a key of a ``_global_`` option (``debug``).

What is left undescribed is returned by :func:`undocumented` (the build lists it). ``_target_``,
``_partial_`` and ``defaults`` are structure, not options; keys of a non-vitrain ``_target_``
(Lightning's Trainer, its callbacks) are documented upstream and counted apart. The experiment
group holds recipes (overrides of other groups, described in docs/recipes.md): shown whole, not
checked key by key.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STRUCTURE_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_", "defaults"}
RECIPE_GROUPS = {"experiment"}
KEY_RE = re.compile(r"^(?P<indent>\s*)(?P<key>[^\s#:'\"\-][^:#]*?|'[^']*'|\"[^\"]*\"):(?:\s+(?P<rest>.*))?$")
BASES = "_base"

# how a key is described: its own comment, a comment naming it, a docstring, the option it extends
# (or the group a `_global_` path points into), upstream, nothing
OWN, NAMED, DOCSTRING, INHERITED, UPSTREAM, NONE = (
    "own",
    "named",
    "docstring",
    "inherited",
    "upstream",
    "none",
)


@dataclass
class Key:
    """One key of an option file: ``path`` is dotted from the file's package."""

    path: str
    line: int
    value: Any
    comment: str = ""
    how: str = NONE
    see: str = ""  # what describes it when it has no comment of its own
    leaf: bool = True
    target: str = ""  # a `_target_` in vitrain: the canonical path of what it builds


@dataclass
class OptionFile:
    """One file under ``conf/``: the option ``name`` of ``group`` (``""``: the primary config)."""

    group: str
    name: str
    path: Path
    package: str | None = None
    description: str = ""
    defaults: list[str] = field(default_factory=list)
    keys: list[Key] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9_-]+", "-", self.name.lower())

    @property
    def prefix(self) -> str:
        """What a key's path is under on the command line: the option's package (``model``,
        ``hydra.launcher``); empty for the primary config, ``_global_`` options and the bases
        (merged where a defaults list puts them)."""
        if self.package:
            return "" if self.package in ("_global_", "_here_") else self.package
        if self.group in ("", BASES) or self.group.startswith(f"{BASES}/"):
            return ""
        return self.group.replace("/", ".")

    def full_path(self, key: Key) -> str:
        return f"{self.prefix}.{key.path}" if self.prefix else key.path


def _target_at(keys: Iterable[Key], parent: str) -> str | None:
    prefix = f"{parent}." if parent else ""
    for key in keys:
        if key.path == f"{prefix}_target_":
            return str(key.value)
    return None


def _split_inline_comment(rest: str) -> tuple[str, str]:
    """``value  # comment`` -> (value, comment); a ``#`` inside quotes stays in the value."""
    for match in re.finditer(r"\s#\s?", rest):
        before = rest[: match.start()]
        if before.count('"') % 2 == 0 and before.count("'") % 2 == 0:
            return before.strip(), rest[match.end() :].strip()
    return rest.strip(), ""


def _lookup(data: Any, parts: list[str]) -> tuple[bool, Any]:
    for part in parts:
        if not isinstance(data, dict) or part not in data:
            return False, None
        data = data[part]
    return True, data


def parse_option(path: Path, group: str, name: str) -> OptionFile:
    """Read one option file: its description, defaults list and every key with its comment."""
    text = path.read_text()
    data = yaml.safe_load(text) or {}
    option = OptionFile(group, name, path)
    comment: list[str] = []
    header_done = False
    stack: list[tuple[int, tuple[str, ...], str]] = []  # (indent, key path, comment) of open mappings
    run_comment = ""  # the comment of the key that started the current run of uncommented keys
    block_indent: int | None = None  # inside a block scalar (`key: |`)
    in_defaults = False
    for number, raw in enumerate(text.splitlines(), start=1):
        indent = len(raw) - len(raw.lstrip())
        stripped = raw.strip()
        if block_indent is not None:
            if not stripped or indent > block_indent:
                continue
            block_indent = None
        if not stripped:
            if comment and not header_done:
                option.description, header_done = " ".join(comment), True
            comment, run_comment = [], ""
            continue
        if stripped.startswith("#"):
            line = stripped[1:].strip()
            if line.startswith("@package"):
                option.package = line.split(None, 1)[1].strip() if " " in line else None
            else:
                comment.append(line)
            continue
        if not header_done:
            option.description, comment, header_done = " ".join(comment), [], True
        if stripped.startswith("- "):
            if in_defaults:
                option.defaults.append(_split_inline_comment(stripped[2:])[0])
            comment = []
            continue
        match = KEY_RE.match(raw)
        if match is None:  # a continuation line of a flow value
            comment = []
            continue
        key = match["key"].strip("'\"")
        value_text, inline = _split_inline_comment(match["rest"] or "")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parts = (*stack[-1][1], key) if stack else (key,)
        dotted = ".".join(parts)
        in_defaults = dotted == "defaults"
        found, value = _lookup(data, list(parts))
        if not found:
            raise ValueError(f"{path}:{number}: key {dotted} not found by the YAML parser")
        own = " ".join([*comment, inline]).strip()
        if own:
            run_comment = own
        entry = Key(dotted, number, value, own, OWN if own else NONE)
        entry.leaf = not isinstance(value, dict) or not value
        if not own:
            entry.see = _covering(key, run_comment, stack, option.description)
            entry.how = NAMED if entry.see else NONE
        option.keys.append(entry)
        comment = []
        if value_text in ("|", ">", "|-", ">-", "|+", ">+"):
            block_indent = indent
        elif isinstance(value, dict) and value and not value_text:
            stack.append((indent, parts, own))
            run_comment = ""
    return option


def _covering(
    key: str, run_comment: str, stack: list[tuple[int, tuple[str, ...], str]], description: str
) -> str:
    """Where ``key`` is described by name: its run's comment, a parent's comment, the file's."""
    named = re.compile(rf"(?<![\w.]){re.escape(key)}(?!\w)")
    if run_comment and named.search(run_comment):
        return run_comment
    for _, _, parent_comment in reversed(stack):
        if parent_comment and named.search(parent_comment):
            return parent_comment
    if description and named.search(description):
        return "see the option's description above"
    return ""


def describe_targets(
    option: OptionFile, target_info: Callable[[str], tuple[str, dict[str, str]] | None]
) -> None:
    """Describe still undescribed keys from their mapping's ``_target_``: a vitrain target by the
    ``Args:`` of its docstring (``target_info(path)``: canonical path and arguments), any other
    target upstream. A vitrain ``_target_`` key records the canonical path, for a link."""
    for key in option.keys:
        parent, _, name = key.path.rpartition(".")
        if name == "_target_":
            info = target_info(str(key.value))
            key.target = info[0] if info else ""
            continue
        if key.how != NONE or not key.leaf or name in STRUCTURE_KEYS:
            continue
        target = _target_at(option.keys, parent)
        if target is None:
            continue
        info = target_info(target)
        if info is None:
            key.how, key.see = UPSTREAM, f"an argument of `{target.rsplit('.', 1)[-1]}` (documented upstream)"
        elif name in info[1]:
            key.how, key.see = DOCSTRING, f"{info[1][name]} (`{target}`)"


def _resolve_default(entry: str, option: OptionFile) -> tuple[str, str] | None:
    """``(group, option)`` a defaults-list entry merges into ``option``: another option of its group
    (``detr_r50``), a base (``/_base/vit@_here_``); None for a choice of another group."""
    text = entry.strip()
    if text == "_self_" or text.startswith("override ") or ":" in text:
        return None
    target = text.split("@", 1)[0]
    if target.startswith("/"):
        group, _, name = target.lstrip("/").rpartition("/")
    else:
        base, _, name = target.rpartition("/")
        group = "/".join(p for p in (option.group, base) if p)
    return group, name


def inherit_descriptions(groups: dict[str, list[OptionFile]]) -> None:
    """Describe a key that only sets a value described elsewhere: the same key of an option this
    one extends (``trainer/ddp`` sets ``strategy`` of ``trainer/default``), and, in a ``_global_``
    option (``debug``, ``hparams_search``), the key of the group its path starts with."""
    by_name = {(o.group, o.name): o for options in groups.values() for o in options}

    def described(option: OptionFile, path: str, seen: frozenset = frozenset()) -> Key | None:
        for key in option.keys:
            if key.path == path and key.how != NONE:
                return key
        for entry in option.defaults:
            ref = _resolve_default(entry, option)
            if ref in by_name and ref not in seen:
                found = described(by_name[ref], path, seen | {ref})
                if found is not None:
                    return found
        return None

    for _ in range(2):  # an inherited description may describe a key of a third file
        for options in groups.values():
            for option in options:
                for key in option.keys:
                    if key.how != NONE or not key.leaf:
                        continue
                    source = _source(option, key.path, groups, described)
                    if source is not None:
                        where, found = source
                        key.how = INHERITED
                        key.see = f"as in {where}: {found.comment or found.see}"


def _source(
    option: OptionFile, path: str, groups: dict[str, list[OptionFile]], described
) -> tuple[str, Key] | None:
    found = described(option, path)
    if found is not None and found.path == path and found not in option.keys:
        owner = next(o for opts in groups.values() for o in opts if found in o.keys)
        return f"`{owner.path.as_posix()}`", found
    if option.package == "_global_" and "." in path:
        head, rest = path.split(".", 1)
        for other in groups.get(head, []):
            hit = described(other, rest)
            if hit is not None:
                return f"`{other.path.as_posix()}`", hit
    return None


def option_files(conf: Path) -> dict[str, list[OptionFile]]:
    """Every option file under ``conf`` by group (``""``: the primary ``conf/*.yaml``; nested
    groups as ``hydra/launcher``), in file-name order."""
    groups: dict[str, list[OptionFile]] = {}
    found = [
        Path(d) / f for d, _, files in os.walk(conf, followlinks=True) for f in files if f.endswith(".yaml")
    ]
    for path in sorted(found):
        rel = path.relative_to(conf)
        group = rel.parent.as_posix() if rel.parent != Path(".") else ""
        groups.setdefault(group, []).append(parse_option(path, group, path.stem))
    return groups


def group_order(groups: dict[str, list[OptionFile]]) -> list[str]:
    """The primary config first, then the groups in the order its defaults list names them, then
    the rest (nested groups after their parent), shared bases last."""
    order = [""] if "" in groups else []
    for primary in groups.get("", []):
        for entry in primary.defaults:
            name = entry.split(":", 1)[0].strip().removeprefix("override ").strip().lstrip("/")
            name = name.split("@", 1)[0]
            if name in groups and name not in order:
                order.append(name)
    for name in sorted(groups, key=lambda g: (g.split("/")[0] == BASES, g)):
        if name not in order:
            order.append(name)
    return order


def page_name(group: str) -> str:
    """The page a group is rendered on: nested groups join their top group's page."""
    top = group.split("/")[0]
    return {"": "top-level", BASES: "bases"}.get(top, top)


def undocumented(groups: dict[str, list[OptionFile]]) -> list[str]:
    """``file:line key`` of every option key that nothing describes."""
    missing = []
    for group, options in groups.items():
        if group in RECIPE_GROUPS:
            continue
        for option in options:
            for key in option.keys:
                name = key.path.rsplit(".", 1)[-1]
                if key.leaf and key.how == NONE and name not in STRUCTURE_KEYS:
                    missing.append(f"{option.path}:{key.line} {option.full_path(key)}")
    return missing


def counts(groups: dict[str, list[OptionFile]]) -> dict[str, int]:
    """How many of the checked option keys each way describes (``OWN``, ``NAMED``, ...)."""
    tally = dict.fromkeys((OWN, NAMED, DOCSTRING, INHERITED, UPSTREAM, NONE), 0)
    for group, options in groups.items():
        if group in RECIPE_GROUPS:
            continue
        for option in options:
            for key in option.keys:
                if key.leaf and key.path.rsplit(".", 1)[-1] not in STRUCTURE_KEYS:
                    tally[key.how] += 1
    return tally


# ---------------------------------------------------------------------------- rendering


def inline_html(text: str) -> str:
    """A comment as HTML: escaped, with `code` spans and bare URLs kept."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if len(part) > 1 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            escaped = html.escape(part)
            out.append(re.sub(r"(https?://[^\s<)]+)", r'<a href="\1">\1</a>', escaped))
    return "".join(out)


def format_value(value: Any) -> str:
    """A default as the YAML a user would write on the command line."""
    if isinstance(value, str):
        if "\n" in value.strip():
            return value.strip().splitlines()[0] + " …"
        return value if value else '""'
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def md_text(text: str) -> str:
    """A comment as one Markdown paragraph: `code` spans kept, everything else literal."""
    out = []
    for part in re.split(r"(`[^`]+`)", text):
        if len(part) > 1 and part.startswith("`") and part.endswith("`"):
            out.append(part)
        else:
            part = html.escape(part, quote=False)
            out.append(re.sub(r"([\\*_\[\]#|])", r"\\\1", part))
    return "".join(out)


def _default_link(entry: str, option: OptionFile, groups: dict[str, list[OptionFile]]) -> str:
    """A defaults-list entry, linked to the option it names when that is a file under conf/."""
    text = entry.removeprefix("override ").strip()
    if ":" in text:  # `group: option` (a choice of another group)
        group, choice = (s.strip() for s in text.split(":", 1))
        group = group.lstrip("/").split("@", 1)[0]
    else:  # an option of this group (or an absolute path) merged in
        target = text.split("@", 1)[0]
        if target.startswith("/"):
            group, _, choice = target.lstrip("/").rpartition("/")
        else:
            base, _, choice = target.rpartition("/")
            group = "/".join(p for p in (option.group, base) if p)
    if not any(o.name == choice for o in groups.get(group, [])):
        return f"`{entry}`"
    page = page_name(group)
    href = f"{page}.md" if page != page_name(option.group) else ""
    return f"[`{entry}`]({href}#{_anchor(group, choice)})"


def _anchor(group: str, name: str) -> str:
    sub = group.split("/", 1)[1] if "/" in group else ""
    return re.sub(r"[^a-z0-9_-]+", "-", f"{sub}-{name}".lower() if sub else name.lower())


def render_option(option: OptionFile, groups: dict[str, list[OptionFile]]) -> str:
    """One option as Markdown: a heading, its description, what it extends, a table of keys."""
    rel = option.path.as_posix()
    sub = option.group.split("/", 1)[1] + "/" if "/" in option.group else ""
    title = f"{sub}{option.name}" if option.group else rel.rsplit("/", 1)[-1]
    lines = [f"## `{title}` {{ #{_anchor(option.group, option.name)} }}", ""]
    if option.description:
        lines += [md_text(option.description), ""]
    meta = [f"`{rel}`"]
    if option.package:
        meta.append(f"package `{option.package}`")
    extends = [d for d in option.defaults if d.strip() != "_self_"]
    if extends:
        meta.append("defaults: " + ", ".join(_default_link(d, option, groups) for d in extends))
    lines += [" · ".join(meta), "{: .vt-option-meta }", ""]
    if option.group in RECIPE_GROUPS:
        lines += [f'??? example "{rel}"', "", "    ```yaml"]
        lines += [f"    {line}" if line else "" for line in option.path.read_text().splitlines()]
        lines += ["    ```", ""]
        return "\n".join(lines)
    rows = [key for key in option.keys if key.path != "defaults" and (key.leaf or key.comment)]
    if not rows:
        return "\n".join(lines)
    lines += [
        '<div class="vt-keys"><table>',
        "<thead><tr><th>key</th><th>default</th><th>description</th></tr></thead>",
    ]
    lines.append("<tbody>")
    for key in rows:
        value = "" if not key.leaf else f"<code>{_breakable(format_value(key.value))}</code>"
        if key.target:  # mkdocs-autorefs links it to the API reference (a missing object fails)
            value = f'<autoref identifier="{key.target}">{value}</autoref>'
        if key.comment:
            text = inline_html(key.comment)
        elif key.how != NONE:
            text = f'<span class="vt-see">{inline_html(key.see)}</span>'
        else:
            text = ""
        name = f"<code>{html.escape(option.full_path(key))}</code>"
        lines.append(f"<tr><td>{name}</td><td>{value}</td><td>{text}</td></tr>")
    lines += ["</tbody>", "</table></div>", ""]
    return "\n".join(lines)


def _breakable(text: str) -> str:
    """Escaped, with line-break opportunities after dots, commas and slashes (long keys, paths)."""
    return re.sub(r"([.,/])", r"\1<wbr>", html.escape(text))


GROUP_INTRO = {
    "": "The primary config, `conf/train.yaml`: the groups it composes (each line of its defaults "
    "list picks the default option of a group) and the top-level keys (`python train.py seed=0`).",
    BASES: "Shared bases, `conf/_base/`: not options of any group. Model options extend them through "
    "their defaults lists; `adapt` is merged into every `model`.",
    "experiment": "Complete recipes, `experiment=<name>`: the files live in the top-level `experiments/` "
    "folder (`conf/experiment` links there). Each overrides other groups; [Recipes](../experiments.md) "
    "lists them with what they measured here, and [Recipes against their sources](../recipes.md) "
    "puts every value beside its paper or reference code.",
}


def render_page(page: str, groups: dict[str, list[OptionFile]], conf_name: str = "conf") -> str:
    """The Markdown of one reference page: every group rendered on ``page``, option by option."""
    parts = []
    for group in group_order(groups):
        if page_name(group) != page:
            continue
        options = groups[group]
        if not parts:  # the key tables need the width: no table of contents beside them
            title = {"": "Top level", BASES: "Shared bases"}.get(group, f"{group}")
            parts += ["---", "hide:", "  - toc", "---", "", f"# {title}", ""]
            intro = GROUP_INTRO.get(group)
            if intro is None:
                names = ", ".join(f"[`{o.name}`](#{_anchor(group, o.name)})" for o in options)
                intro = f"`{group}=<option>` picks one file of `{conf_name}/{group}/`: {names}."
            parts += [intro, ""]
        elif "/" in group:
            names = ", ".join(f"`{o.name}`" for o in options)
            parts += [f"`{group}=<option>` picks one file of `{conf_name}/{group}/`: {names}.", ""]
        for option in options:
            parts.append(render_option(option, groups))
    return "\n".join(parts)


def pages(groups: dict[str, list[OptionFile]]) -> list[tuple[str, str]]:
    """``(page name, title)`` of every reference page, in navigation order."""
    out: list[tuple[str, str]] = []
    for group in group_order(groups):
        page = page_name(group)
        if page not in (p for p, _ in out):
            out.append((page, {"": "Top level", BASES: "Shared bases"}.get(group, group)))
    return out
