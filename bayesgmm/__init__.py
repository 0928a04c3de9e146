"""bayesgmm: Gaussian mixture models on JAX and NumPyro, by EM and by NUTS."""

# The public names load on first use (PEP 562): ``import bayesgmm`` alone does not import JAX,
# so that the command line (``python -m bayesgmm``, the ``bayesgmm`` script, both of which
# import this package first) can take over Ctrl-C before anything slow happens.

import importlib
import sys
import types

__version__ = "0.1.0"

# public name -> the module that defines it (None: the submodule of that name)
_EXPORTS = {
    "DegenerateFitWarning": "select",
    "FitResult": "api",
    "Mixture": "api",
    "MultimodalPosteriorWarning": "exceptions",
    "Prior": "priors",
    "Selection": "select",
    "compare": "posterior",
    "datasets": None,
    "plot_compare": "posterior",
    "posterior_membership": "predictive",
    "select": "select",
    "shard_rows": "distributed",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{_EXPORTS[name] or name}", __name__)
    value = module if _EXPORTS[name] is None else getattr(module, name)
    if name != "select":
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """``bayesgmm.select`` is the function, also once the submodule of that name is imported.

    Importing ``bayesgmm.select`` makes the import system assign the submodule to the package
    attribute of the same name; that assignment is ignored, any other (a test's monkeypatch)
    is kept.
    """

    @property
    def select(self):
        override = self.__dict__.get("_select_override")
        return override if override is not None else __getattr__("select")

    @select.setter
    def select(self, value) -> None:
        if not (isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.select"):
            self.__dict__["_select_override"] = value


sys.modules[__name__].__class__ = _Package
