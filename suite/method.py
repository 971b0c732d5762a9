"""Methods as plugins: what a task family varies is a class with its own config.

A family declares, in a light module of its own (say ``tasks/mytask/config.py``), its base
config (the keys every one of its methods reads) and a :class:`MethodRegistry` naming the
package that holds its methods. Each method is one :class:`Method` subclass, registered where
it is defined, whose config subclasses the family's base config::

    # tasks/mytask/config.py
    class MyConfig(BaseConfig):
        epochs: int = Field(5, ge=1)  # passes over the data

    METHODS = MethodRegistry(MyConfig, package="tasks.mytask.methods")

    # tasks/mytask/methods/mine.py
    class MineConfig(MyConfig):
        method: Literal["mine"] = "mine"
        lr: float = Field(0.1, gt=0)  # only mine reads it

    @METHODS.register
    class Mine(Method):
        Config = MineConfig

        def run(self, config: MineConfig, ctx: RunContext) -> dict[str, float]: ...

The task sets ``method_registry = METHODS``; its config is then the discriminated union of its
methods' configs on ``method`` (:meth:`MethodRegistry.union`). The registry imports every module
of its package the first time it is asked for a method, so method modules import only light
libraries at module level (``suite list`` imports them) and heavy ones inside ``run``.
"""

from __future__ import annotations

import importlib
import pkgutil
import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Union

from pydantic import Field

from suite.config import BaseConfig, build_config
from suite.errors import ConfigError
from suite.registry import Registry, unknown_name_message


class Method:
    """One method of a task family.

    Write ``Config``: a subclass of the family's base config with ``method: Literal["<name>"] =
    "<name>"`` (the method's name comes from there) and only the keys this method reads. Then
    either ``run`` (the whole run of a config), or the step that the family's own ``Task.run``
    calls on ``task.method_of(config)``.

    Optional, each given the method's config: ``privacy_unit`` (``example``, ``label``,
    ``client`` or ``none``), ``accountant`` and ``sampler`` (tags of the run), ``reference``
    (the config whose run this one's slowdown is measured against).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[BaseConfig]]

    def privacy_unit(self, config: Any) -> str:
        """What one privacy guarantee protects: example, label, client, or none."""
        return "none"

    def accountant(self, config: Any) -> str:
        """The accountant behind ``privacy/epsilon`` (``none`` when there is none)."""
        return "none"

    def sampler(self, config: Any) -> str | None:
        """How a DP run samples its batches (``poisson``, ``fixed_size``, ...); None when not DP."""
        return None

    def reference(self, config: Any) -> BaseConfig | None:
        """The config whose run this one's slowdown is measured against, if any."""
        return None


class MethodRegistry:
    """The methods of one family, by name; their modules are imported from ``package`` on first use."""

    def __init__(self, base: type[BaseConfig], *, package: str) -> None:
        self.base = base
        self.package = package
        self._methods: Registry[type[Method]] = Registry("method")
        self._loaded = False

    def register(self, cls: type[Method]) -> type[Method]:
        """Class decorator: register a :class:`Method` under the name its config's ``method`` allows."""
        config = getattr(cls, "Config", None)
        if not (isinstance(config, type) and issubclass(config, self.base)):
            raise TypeError(f"method {cls.__name__}: Config must subclass {self.base.__name__}")
        cls.name = _method_name(config)
        self._methods.add(cls.name, cls)
        return cls

    def get(self, name: str) -> type[Method]:
        """The method called ``name``; a ConfigError naming the known ones (and a close match) if none is."""
        self._load()
        if name not in self._methods:
            raise ConfigError("method: " + unknown_name_message("method", str(name), self._methods.names()))
        return self._methods.get(name)

    def names(self) -> list[str]:
        self._load()
        return self._methods.names()

    def configs(self) -> dict[str, type[BaseConfig]]:
        """Method name -> its config class."""
        return {name: self.get(name).Config for name in self.names()}

    def holders(self) -> dict[str, list[str]]:
        """Config key -> the methods whose config has it (every key of every method)."""
        out: dict[str, list[str]] = {}
        for name, config in self.configs().items():
            for key in config.model_fields:
                out.setdefault(key, []).append(name)
        return out

    def union(self) -> Any:
        """The family's config type: the union of its methods' configs, discriminated by ``method``.

        For pydantic users (``TypeAdapter(registry.union()).validate_python(values)``); the
        suite's own resolution (:mod:`suite.resolve`) gives the same configs with errors that
        name the methods a misplaced key belongs to.
        """
        configs = tuple(self.configs().values())
        if len(configs) == 1:
            return configs[0]
        return Annotated[Union[configs], Field(discriminator="method")]  # noqa: UP007 - a runtime tuple

    def convert(self, config: BaseConfig, method: str) -> BaseConfig:
        """The config of ``method`` made of the keys of ``config`` that ``method`` has (e.g. a reference run)."""
        model = self.get(method).Config
        values: Mapping[str, Any] = config.model_dump()
        return build_config(model, {**{k: v for k, v in values.items() if k in model.model_fields},
                                    "method": method})

    def _load(self) -> None:
        if self._loaded:
            return
        package = importlib.import_module(self.package)
        for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
            if not module.startswith("_"):
                importlib.import_module(f"{self.package}.{module}")
        self._loaded = True


def _method_name(config: type[BaseConfig]) -> str:
    field = config.model_fields["method"]
    choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is typing.Literal else ()
    if len(choices) != 1 or field.default != choices[0]:
        raise TypeError(f"{config.__name__}.method must be Literal['<name>'] with that name as its default")
    return str(choices[0])
