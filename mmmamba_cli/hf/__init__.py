"""transformers integration: ``MMMambaConfig`` / ``MMMambaForCausalLM`` and their Auto registration.

Importing this package is cheap (transformers is imported only by its submodules).
``mmmamba_cli/__init__.py`` calls :func:`register_lazily`, so after ``import mmmamba_cli``
``AutoConfig`` / ``AutoModelForCausalLM.from_pretrained(model_dir)`` work for every mmmamba model
directory, in whichever order mmmamba_cli and transformers are imported.
"""
from __future__ import annotations

from .hook import install

CONFIG_AUTO = "transformers.models.auto.configuration_auto"
MODEL_AUTO = "transformers.models.auto.modeling_auto"

__all__ = ["MMMambaConfig", "MMMambaForCausalLM", "register", "register_config", "register_lazily"]


def register_config() -> None:
    from transformers.models.auto.configuration_auto import AutoConfig  # the finished module, not the package

    from .configuration import MMMambaConfig

    AutoConfig.register(MMMambaConfig.model_type, MMMambaConfig, exist_ok=True)


def register() -> None:
    """Register the config and the causal-LM class with the Auto classes (imports transformers)."""
    from transformers.models.auto.modeling_auto import AutoModelForCausalLM

    from .configuration import MMMambaConfig
    from .modeling import MMMambaForCausalLM

    register_config()
    AutoModelForCausalLM.register(MMMambaConfig, MMMambaForCausalLM, exist_ok=True)


def register_lazily() -> None:
    """Register now for the Auto modules already imported, on import for the others."""
    hook = install()
    hook.add(CONFIG_AUTO, register_config)
    hook.add(MODEL_AUTO, register)


def __getattr__(name: str):
    if name == "MMMambaConfig":
        from .configuration import MMMambaConfig

        return MMMambaConfig
    if name == "MMMambaForCausalLM":
        from .modeling import MMMambaForCausalLM

        return MMMambaForCausalLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
