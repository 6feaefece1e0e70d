"""A country as written by a person or an order system -> its ISO 3166-1 alpha-2 code, or None.

Both vendors want the code (Google in clear, Meta hashed), and shops send
anything from ``us`` to ``United States of America``. The names come from
``pycountry`` (the Debian iso-codes data: English names, official names,
common names, and their translations into every language the package ships),
never from a list kept here, so that a renamed country is followed by an
upgrade, not by an edit. Reading, in order:

1. Two letters: an alpha-2 code pycountry knows, or a region ``phonenumbers``
   numbers (``XK``, ``AC``, ``TA``: codes accepted before pycountry was used),
   or ``UK``, which ISO 3166/MA keeps "exceptionally reserved" for the United
   Kingdom. Three letters: an alpha-3 code (``USA``, ``DEU``).
2. A name, exactly (case, accents, spaces and punctuation aside): any English
   name, official or common name (``United States of America``, ``South
   Korea``), any translation (``Deutschland``), or a pycountry subdivision of
   type "Country" (``England`` -> ``gb``). A name two countries share in some
   language is left out rather than guessed.
3. Otherwise the input's words, in order, as the beginnings of consecutive
   words of exactly one country's English names: ``Great Britain`` is inside
   "United Kingdom of Great Britain and Northern Ireland", ``Russia`` begins
   "Russian Federation". This is the only fuzzy step and it never picks among
   candidates: ``Korea`` (north or south) and ``America`` (the US or American
   Samoa) are dropped. Each word must have 4 letters or more, so ``Ger`` or
   ``Aus`` are dropped too. pycountry's own ``search_fuzzy`` is not used: it
   also matches subdivisions, so ``Holland`` or a US state would become a
   country the customer did not write.

Anything else is None: an unknown country is dropped, never sent as typed.
"""

from __future__ import annotations

import functools
import gettext
import os
import unicodedata

import phonenumbers
import pycountry

_EXCEPTIONALLY_RESERVED = {"uk": "gb"}
_MIN_FUZZY_WORD = 4


def _words(text: str) -> list[str]:
    """Lowercase words of letters only, accents removed: ``Côte d'Ivoire`` -> ``["cote", "divoire"]``."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    words: list[str] = []
    current: list[str] = []
    for ch in folded:
        category = unicodedata.category(ch)
        if category[0] == "L":
            current.append(ch)
        elif category[0] == "M" or ch in "'’`":  # accents and apostrophes join, they do not split
            continue
        elif current:
            words.append("".join(current))
            current = []
    if current:
        words.append("".join(current))
    return words


def _key(text: str) -> str:
    return "".join(_words(text))


@functools.lru_cache(maxsize=4096)
def country_code(value: str) -> str | None:
    """ISO 3166-1 alpha-2 in lower case (``us``), or None when the text names no single country.

    Cached: a shop writes its customers' countries the same few ways, and the
    fuzzy step reads every country's names.
    """
    key = _key(value)
    if not key:
        return None
    if key.isascii() and len(key) <= 3:
        key = _EXCEPTIONALLY_RESERVED.get(key, key)
        if len(key) == 2:
            return key if key in _alpha_2() else None
        if key in _alpha_3():
            return _alpha_3()[key]
    exact = _by_name().get(key)
    if exact is None and key not in _by_name():
        exact = _by_translated_name().get(key)
    return exact if exact is not None else _fuzzy(_words(value))


def load_tables() -> None:
    """Read every table now (about a second, most of it the translations) rather than on the first unknown name.

    For a server to call at start-up, so that no request waits for it.
    """
    _alpha_2(), _alpha_3(), _english_names(), _by_name(), _by_translated_name()


def _fuzzy(words: list[str]) -> str | None:
    if not words or any(len(word) < _MIN_FUZZY_WORD for word in words):
        return None
    found = {code for code, name in _english_names() if _starts_words(words, name)}
    return found.pop() if len(found) == 1 else None


def _starts_words(query: list[str], name: list[str]) -> bool:
    """True when the query's words begin consecutive words of the name, in order."""
    for start in range(len(name) - len(query) + 1):
        if all(name[start + i].startswith(word) for i, word in enumerate(query)):
            return True
    return False


@functools.cache
def _alpha_2() -> frozenset[str]:
    codes = {country.alpha_2.lower() for country in pycountry.countries}
    return frozenset(codes | {region.lower() for region in phonenumbers.SUPPORTED_REGIONS})


@functools.cache
def _alpha_3() -> dict[str, str]:
    return {country.alpha_3.lower(): country.alpha_2.lower() for country in pycountry.countries}


def _names_of(country: object) -> list[str]:
    return [name for attr in ("name", "official_name", "common_name") if (name := getattr(country, attr, None))]


@functools.cache
def _english_names() -> tuple[tuple[str, list[str]], ...]:
    return tuple(
        (country.alpha_2.lower(), _words(name)) for country in pycountry.countries for name in _names_of(country)
    )


@functools.cache
def _by_name() -> dict[str, str]:
    """Exact names -> code: every English name, then (for a name that is none) every translation.

    Loaded on first use only (most addresses carry a code); the translations
    are read only when a name is not an English one. A name that means two
    countries is left out.
    """
    english: dict[str, set[str]] = {}
    for country in pycountry.countries:
        for name in _names_of(country):
            english.setdefault(_key(name), set()).add(country.alpha_2.lower())
    for subdivision in pycountry.subdivisions:
        key = _key(subdivision.name.split("[")[0])
        if subdivision.type == "Country" and key not in english:  # England, Scotland, Wales; not Aruba (a code of its own)
            english[key] = {subdivision.country_code.lower()}
    return _unique(english)


@functools.cache
def _by_translated_name() -> dict[str, str]:
    translated: dict[str, set[str]] = {}
    for language in sorted(os.listdir(pycountry.LOCALES_DIR)):
        path = os.path.join(pycountry.LOCALES_DIR, language, "LC_MESSAGES", "iso3166-1.mo")
        if not os.path.exists(path):
            continue
        with open(path, "rb") as handle:
            catalogue = gettext.GNUTranslations(handle)
        for country in pycountry.countries:
            for name in _names_of(country):
                text = catalogue.gettext(name)
                if text != name:
                    translated.setdefault(_key(text), set()).add(country.alpha_2.lower())
    return _unique(translated)


def _unique(found: dict[str, set[str]]) -> dict[str, str]:
    return {key: next(iter(codes)) for key, codes in found.items() if key and len(codes) == 1}
