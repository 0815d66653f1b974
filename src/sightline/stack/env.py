"""A service's own pydantic Settings, built by the stack and handed to its process as env vars.

The stack builds each service's settings object with that service's class, so a renamed or
mistyped field fails when the stack is planned (and under mypy), not in a child's start-up
log. The object is built from the stack's arguments alone: the shell's ``SIGHTLINE_*``
variables reach neither the plan nor the children, whose environment is built from scratch.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from pydantic import SecretBytes, SecretStr
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

P = ParamSpec("P")
S = TypeVar("S", bound=BaseSettings)


def build_settings(cls: Callable[P, S], *args: P.args, **kwargs: P.kwargs) -> S:
    """``cls(**kwargs)``, validated from these arguments only (no environment, no dotenv file).

    Nested settings (``telemetry``) must be passed too, built the same way: their default
    factories would read this process's environment.
    """
    return cast(S, _arguments_only(cls)(*args, **kwargs))


@functools.cache
def _arguments_only(cls: Callable[..., BaseSettings]) -> Callable[..., BaseSettings]:
    def sources(
        _cls: type[BaseSettings],
        /,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        **_: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    assert isinstance(cls, type) and issubclass(cls, BaseSettings)
    namespace = {"__module__": cls.__module__, "settings_customise_sources": classmethod(sources)}
    return type(cls.__name__, (cls,), namespace)


def env_prefix(cls: type[BaseSettings]) -> str:
    """The env prefix the settings class reads its fields from."""
    return str(cls.model_config.get("env_prefix", ""))


def settings_env(settings: BaseSettings) -> dict[str, str]:
    """The env vars that make ``type(settings)()`` in a child equal ``settings``.

    Only fields that were set are written (defaults stay the child's own); nested settings are
    written under their own prefix, which their default factory reads in the child.
    """
    cls = type(settings)
    env: dict[str, str] = {}
    for name in sorted(settings.model_fields_set):
        value = getattr(settings, name)
        if isinstance(value, BaseSettings):
            env.update(settings_env(value))
        elif value is None:
            if cls.model_fields[name].default is not None:
                raise ValueError(f"{cls.__name__}.{name}=None cannot be expressed as an env var")
        else:
            env[f"{env_prefix(cls)}{name}".upper()] = _env_value(value)
    return env


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr | SecretBytes):
        secret = value.get_secret_value()
        return secret.decode() if isinstance(secret, bytes) else secret
    if isinstance(value, str | int | float | Path):
        return str(value)
    # pydantic-settings parses complex fields (lists, dicts) from JSON.
    return json.dumps(to_jsonable_python(value))
