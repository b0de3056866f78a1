"""MkDocs hook (``hooks:`` in mkdocs.yml): the generated parts of the manual.

- ``configuration/<group>.md``: the configuration reference, rendered from ``conf/``
  (``config_reference.py``);
- ``api/<package>.md``: the API reference, one mkdocstrings block per module
  (``api_reference.py``);
- ``experiments/``: the result pages and their figures from the top-level ``experiments/``
  folder, served as if they were in ``docs/``, so the manual links to them where they live;
- a nav entry ``<folder>/*`` expands to that folder's generated pages, in order;
- links are written for the repository (they work on GitHub): a relative link that reaches
  ``experiments/`` or ``docs/`` from where the page really lives is rewritten to the site's page.

The build logs (level INFO, so ``--strict`` passes) every config key that no comment describes
and every public function, class or method without a docstring.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).parent))

import api_reference  # noqa: E402
import config_reference  # noqa: E402

log = logging.getLogger("mkdocs.hooks.vitrain")

GENERATED: dict[str, tuple[str, str]] = {}  # src_uri -> (nav title, Markdown)
EXPERIMENT_FILES = (".md", ".png", ".jpg", ".svg", ".csv", ".yaml")
RST_ROLE = re.compile(r":(?:meth|func|class|attr|mod|data|obj|exc):(<code>)")
LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")
SITE_FOLDERS = {"docs": "", "experiments": "experiments/"}  # repository folder -> place in the site


def _root(config) -> Path:
    return Path(config.config_file_path).parent


def on_config(config):
    """Render the generated pages and expand the ``<folder>/*`` nav entries."""
    root = _root(config)
    GENERATED.clear()
    package = api_reference.load(root)
    groups = config_reference.option_files(root / "conf")
    for options in groups.values():
        for option in options:
            option.path = option.path.relative_to(root)
            config_reference.describe_targets(option, lambda t: api_reference.target_info(package, t))
    config_reference.inherit_descriptions(groups)
    for page, title in config_reference.pages(groups):
        GENERATED[f"configuration/{page}.md"] = (title, config_reference.render_page(page, groups))
    for page in api_reference.pages(package):
        GENERATED[f"api/{page.name}.md"] = (page.title, api_reference.render(page))
    _report(groups, package)
    experiments = sorted((root / "experiments").glob("*.md"))
    folders = {
        "configuration": [(t, uri) for uri, (t, _) in GENERATED.items() if uri.startswith("configuration/")],
        "api": [(t, uri) for uri, (t, _) in GENERATED.items() if uri.startswith("api/")],
        "experiments": [(None, f"experiments/{p.name}") for p in experiments],
    }
    config.nav = _expand(config.nav, folders)
    return config


def _expand(nav, folders: dict[str, list[tuple[str | None, str]]]):
    """Replace every ``<folder>/*`` string of the nav by that folder's pages."""
    if isinstance(nav, list):
        out = []
        for item in nav:
            if isinstance(item, str) and item.endswith("/*"):
                pages = folders.get(item[:-2])
                if pages is None:
                    raise ValueError(
                        f"mkdocs.yml nav: {item} names no generated folder ({', '.join(folders)})"
                    )
                out += [uri if title is None else {title: uri} for title, uri in pages]
            else:
                out.append(_expand(item, folders))
        return out
    if isinstance(nav, dict):
        return {key: _expand(value, folders) for key, value in nav.items()}
    return nav


def _report(groups, package) -> None:
    """Log what the reference cannot describe: config keys without a comment, objects without a docstring."""
    tally = config_reference.counts(groups)
    missing = config_reference.undocumented(groups)
    log.info(
        "config reference: %d keys; described by their comment %d, named in a comment %d, by a docstring %d, "
        "by the option they extend %d, upstream (Lightning, Hydra) %d; undescribed %d",
        sum(tally.values()),
        tally["own"],
        tally["named"],
        tally["docstring"],
        tally["inherited"],
        tally["upstream"],
        len(missing),
    )
    for entry in missing:
        log.info("  config key without a description: %s", entry)
    objects, methods = api_reference.undocumented(package)
    log.info(
        "API reference: %d public functions/classes and %d public methods without a docstring",
        len(objects),
        len(methods),
    )
    for entry in objects + methods:
        log.info("  no docstring: %s", entry)


def on_files(files: Files, config) -> Files:
    """Add the generated pages and the experiments folder's pages and figures."""
    for uri, (_, content) in GENERATED.items():
        files.append(File.generated(config, uri, content=content))
    experiments = _root(config) / "experiments"
    for path in sorted(experiments.rglob("*")):
        if path.is_file() and path.suffix in EXPERIMENT_FILES:
            uri = f"experiments/{path.relative_to(experiments).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Rewrite repository-relative links (``../experiments/x.md`` from ``docs/``, ``../docs/x.md``
    from ``experiments/``) to the pages' places in the site."""
    root = _root(config)
    uri = page.file.src_uri
    real = root / uri if uri.startswith("experiments/") else Path(config.docs_dir) / uri
    site_dir = posixpath.dirname(uri)

    def rewrite(match: re.Match) -> str:
        target = match[2]
        if "://" in target or target.startswith(("/", "mailto:")):
            return match[0]
        resolved = Path(os.path.normpath(real.parent / target))
        for folder, place in SITE_FOLDERS.items():
            base = root / folder
            if resolved.is_relative_to(base) and resolved.exists():
                site_uri = place + resolved.relative_to(base).as_posix()
                new = posixpath.relpath(site_uri, site_dir or ".")
                return f"{match[1]}{new}{match[3] or ''}{match[4]}"
        return match[0]

    return LINK.sub(rewrite, markdown)


def on_page_content(html: str, page, config, files) -> str:
    """Docstrings use Sphinx roles (``:meth:`name```): show the name alone."""
    return RST_ROLE.sub(r"\1", html)
