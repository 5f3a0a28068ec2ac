"""Check every link inside the built site: ``python3 docs/check_links.py [docs/_build/html]``.

Each relative ``href`` and ``src`` of every HTML page must name a file that exists in
the build and, with a ``#fragment``, an element of that page with that ``id`` (or an
``<a name>``). Links to other sites (http, https, mailto) are not fetched, only listed
with ``-v``. Exit 1, naming page and link, when any link inside the site is broken.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: Schemes whose links leave the site.
OUTSIDE = ("http", "https", "mailto", "ftp", "data", "javascript")


class _Page(HTMLParser):
    """The ids a page defines and the links it makes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("id",) + (("name",) if tag == "a" else ()):
            value = found.get(name)
            if value:
                self.ids.add(value)
        for name in ("href", "src"):
            value = found.get(name)
            if value is not None and not (tag == "link" and found.get("rel") == "preconnect"):
                self.links.append(value)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    page.close()
    return page


def broken_links(root: Path) -> Iterator[tuple[Path, str, str]]:
    """(page, link, why) for each link inside the site at ``root`` that leads nowhere."""
    pages = {path.resolve(): _parse(path) for path in sorted(root.rglob("*.html"))}
    for path, page in pages.items():
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme in OUTSIDE or link.startswith("//"):
                continue
            address, fragment = parts.path, parts.fragment
            target = (path.parent / unquote(address)).resolve() if address else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_relative_to(root.resolve()):
                yield path, link, "leads outside the site"
            elif not target.exists():
                yield path, link, "no such file"
            elif fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(fragment) not in ids:
                    yield path, link, f"no #{fragment} in {target.relative_to(root.resolve())}"


def outside_links(root: Path) -> set[str]:
    """Every link of the site to another site."""
    found: set[str] = set()
    for path in root.rglob("*.html"):
        found |= {link for link in _parse(path).links if urlsplit(link).scheme in OUTSIDE}
    return found


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    given = [arg for arg in argv if arg != "-v"]
    root = Path(given[0] if given else Path(__file__).parent / "_build" / "html")
    if not (root / "index.html").exists():
        print(f"check_links: no built site at {root} (run inv docs)", file=sys.stderr)
        return 2
    broken = list(broken_links(root))
    for path, link, why in broken:
        print(f"{path.relative_to(root.resolve())}: {link}: {why}", file=sys.stderr)
    outside = sorted(outside_links(root))
    pages = len(list(root.rglob("*.html")))
    if verbose:
        for link in outside:
            print(f"not fetched: {link}")
    print(
        f"check_links: {pages} pages, {len(broken)} broken links inside the site; "
        f"{len(outside)} links to other sites, not fetched"
    )
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
