"""The hook-list type TransformerLens' ``run_with_hooks`` and ``hooks`` take."""

from collections.abc import Callable
from typing import Any

# (hook name or name filter, hook function). TL annotates its parameters with this exact list
# type, and lists are invariant: functions returning hooks for TL return it as declared here.
# Any: TL's bare ``Callable`` (any arguments, any return); a narrower type would not match it.
HookList = list[tuple[str | Callable[..., Any], Callable[..., Any]]]
