"""Which store URIs and keys may be followed: the one rule the sweep's store and the report's run reader share.

A results file is data that anyone may have edited, and pyarrow reads options from a URI's query string
(`s3://x?endpoint_override=host&scheme=http` builds a client for `host` that receives requests signed with the
user's credentials). So a URI or key taken from a results row, a flag or a store listing is refused when it
carries a query string or fragment, or a `..` segment (which would leave the sweep's folder).

    check_uri("s3://bucket/sweeps/x/classifiers/t1")   # -> the URI; ValueError naming it when refused
    check_key("gans/abc/a-1f2e/checkpoints")           # a key inside a sweep's folder
"""
from __future__ import annotations

import re

SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def _dot_segments(path: str) -> bool:
    return any(seg == ".." for seg in re.split(r"[/\\]", path))


def check_uri(uri: str, what: str = "URI") -> str:
    """`uri` when it is safe to open: a scheme://bucket/path or a path, with no query string, no fragment and
    no `..` segment; else ValueError naming it."""
    text = str(uri)
    if "?" in text or "#" in text:
        raise ValueError(f"{what} {text!r} carries a query string or fragment: refused (a query string can point "
                         f"the client at another host, e.g. endpoint_override)")
    if _dot_segments(SCHEME.sub("", text)):
        raise ValueError(f"{what} {text!r} has a '..' segment: refused (it would leave the folder it names)")
    return text


def check_key(key: str, what: str = "store key") -> str:
    """`key` when it is a relative path inside a sweep's folder (no scheme, no leading '/', no '..', no query)."""
    text = str(key)
    if SCHEME.match(text) or text.startswith(("/", "\\")):
        raise ValueError(f"{what} {text!r} must be relative to the sweep's folder")
    return check_uri(text, what)
