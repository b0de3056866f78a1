"""The API reference pages and the docstring check, from vitrain's source (read by griffe, the
library mkdocstrings uses, without importing vitrain).

One page per package (``vitrain.models``, ``vitrain.tasks``, ``vitrain.data``,
``vitrain.callbacks``, ``vitrain.run``, ``vitrain.tools``, ...) lists its modules; the modules at
the package root (shared by the layers) share one page. A new module appears without editing anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import griffe

# Methods that fill in a hook of Lightning, torch or Python: their contract is documented there.
HOOK_RE = re.compile(
    r"^(on_\w+|\w+_step|\w+_dataloader|setup|teardown|prepare_data|configure_\w+|forward|"
    r"state_dict|load_state_dict|extra_repr|set_epoch|train|step|log_hyperparams|log_metrics|"
    r"experiment|name|version|save|finalize|setup_environment|lr_scheduler_step)$"
)


@dataclass
class Page:
    """An API page: its file name under ``api/``, title, intro, the package whose docstring it
    opens with (its members are documented where they are defined) and the modules it documents."""

    name: str
    title: str
    intro: str
    modules: list[str]
    package: str | None = None


def load(root: Path, package: str = "vitrain") -> griffe.Module:
    """The package as griffe sees it (static analysis, Google-style docstrings)."""
    return griffe.load(package, search_paths=[str(root)], docstring_parser="google", resolve_aliases=False)


def _is_package(module: griffe.Module) -> bool:
    return isinstance(module.filepath, Path) and module.filepath.name == "__init__.py"


def _modules(package: griffe.Module) -> list[griffe.Module]:
    """The package's modules, recursively (sub-packages too), sorted by path; ``__main__`` skipped."""
    out = []
    for member in sorted(package.modules.values(), key=lambda m: m.path):
        if member.name == "__main__" or member.is_alias:
            continue
        out.append(member)
        if _is_package(member):
            out.extend(_modules(member))
    return out


def pages(package: griffe.Module) -> list[Page]:
    """One page per sub-package, then one for the modules at the package root."""
    out = []
    for sub in sorted(package.modules.values(), key=lambda m: m.name):
        if _is_package(sub) and not sub.is_alias:
            modules = [m.path for m in _modules(sub)]
            out.append(Page(sub.name, f"{package.name}.{sub.name}", "", modules, package=sub.path))
    root_modules = [m for m in _modules(package) if m.parent is package and not _is_package(m)]
    if root_modules:
        out.append(
            Page(
                "shared",
                "Shared modules",
                "The modules at the package root: what every layer shares (errors, seeding, "
                "checkpoints and weight files, the Hugging Face hub, loggers). The root's "
                "`vitrain/<tool>.py` modules only run the command-line tools of `vitrain.tools`.",
                [m.path for m in root_modules],
            )
        )
    return out


def render(page: Page) -> str:
    """The Markdown of an API page: a mkdocstrings block per module."""
    lines = [f"# {page.title}", ""]
    if page.intro:
        lines += [page.intro, ""]
    if page.package:  # the package's docstring; its members are documented in their modules
        lines += [
            f"::: {page.package}",
            "    options:",
            "      members: false",
            "      show_root_heading: false",
            "",
        ]
    for module in page.modules:
        lines += [f"::: {module}", ""]
    return "\n".join(lines)


def undocumented(package: griffe.Module) -> tuple[list[str], list[str]]:
    """``(objects, methods)`` without a docstring: public functions and classes of every module,
    and the public methods of those classes (hooks of Lightning / torch left out)."""
    objects, methods = [], []
    for module in _modules(package):
        for member in module.members.values():
            if member.is_alias or member.name.startswith("_"):
                continue
            if (member.is_function or member.is_class) and not member.docstring:
                objects.append(_where(member))
            if member.is_class:
                for method in member.members.values():
                    if method.is_alias or not method.is_function or method.name.startswith("_"):
                        continue
                    if not method.docstring and not HOOK_RE.match(method.name):
                        methods.append(_where(method))
    return objects, methods


def _where(obj: griffe.Object) -> str:
    return f"{obj.relative_filepath}:{obj.lineno} {obj.path}"


def target_info(package: griffe.Module, target: str) -> tuple[str, dict[str, str]] | None:
    """A vitrain ``_target_``: its canonical path (where the API reference documents it) and the
    ``Args:`` of its docstring (a class: its own docstring and its ``__init__``'s) as
    ``{name: description}``; None when the target is not in the package."""
    if not target.startswith(f"{package.name}."):
        return None
    try:
        obj = package[target.removeprefix(f"{package.name}.")]
        if obj.is_alias:
            obj = obj.final_target
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    docstrings = []
    # a class: its own docstrings first, then its vitrain base classes' (arguments they document
    # once for every subclass, e.g. a DataModule's batch_size)
    for cls in [obj, *_vitrain_bases(obj)] if obj.is_class else [obj]:
        docstrings.append(cls.docstring)
        if cls.is_class and "__init__" in cls.members:
            docstrings.append(cls.members["__init__"].docstring)
    args: dict[str, str] = {}
    for docstring in docstrings:
        if docstring is None:
            continue
        for section in docstring.parse("google", warnings=False):
            if section.kind is griffe.DocstringSectionKind.parameters:
                for param in section.value:  # "mean, std: ..." documents both
                    for name in param.name.split(","):
                        args.setdefault(name.strip(), plain_markdown(param.description))
    return obj.path, args


def _vitrain_bases(cls: griffe.Class) -> list[griffe.Class]:
    try:
        return [base for base in cls.mro() if base.path.startswith(f"{cls.package.name}.")]
    except (griffe.AliasResolutionError, griffe.CyclicAliasError, ValueError):
        return []


def plain_markdown(text: str) -> str:
    """A docstring fragment on one line, Sphinx markup (````x````, ``:meth:`x```) as Markdown code."""
    text = re.sub(r":(?:meth|func|class|attr|mod|data|obj|exc):`", "`", text)
    return " ".join(text.replace("``", "`").split())
