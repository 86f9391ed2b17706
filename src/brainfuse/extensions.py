"""What a run can use: the built-in methods and modalities plus those that extensions add.

An extension is a ``"module:function"`` named in the config's ``extensions``; the function is
called with the method :class:`~brainfuse.methods.catalog.Catalog` and the modalities (name ->
:class:`~brainfuse.modalities.base.Modality`) and adds to them. Nothing registers itself on
import: the Snakefile and every job that looks a method or modality up call
:func:`load_extensions` with the same list.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence

from brainfuse.core.errors import ConfigError
from brainfuse.methods.catalog import Catalog, default_catalog
from brainfuse.modalities import builtin_modalities
from brainfuse.modalities.base import Modality


def load_extensions(
    references: Sequence[str] = (), variants: Mapping[str, str] | None = None
) -> tuple[Catalog, dict[str, Modality]]:
    """The method catalog and the modalities, with every extension in ``references`` applied.

    Parameters
    ----------
    references : sequence of str
        ``"module:function"`` callables, applied in order; each is called as
        ``function(catalog, modalities)``.
    variants : mapping of str to str, optional
        The config's method variants (name -> the method it copies,
        :meth:`~brainfuse.methods.catalog.Catalog.add_variants`), added after the extensions.

    Returns
    -------
    catalog : Catalog
    modalities : dict of str to Modality
    """
    catalog, modalities = default_catalog(), builtin_modalities()
    for reference in references:
        module, _, name = reference.partition(":")
        try:
            register = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"extensions: cannot load {reference!r} ({err})") from err
        register(catalog, modalities)
    catalog.add_variants(variants or {})
    return catalog, modalities
