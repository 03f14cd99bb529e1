"""OpenAI ``tools`` / ``tool_choice`` → Gemini function declarations and calling config.

| tool_choice | functionCallingConfig |
|---|---|
| absent, ``"auto"`` | ``AUTO`` |
| ``"none"`` | ``NONE`` |
| ``"required"`` | ``ANY`` |
| ``{"type": "function", "function": {"name": N}}`` | ``ANY``, ``allowedFunctionNames: [N]`` |
| ``allowed_tools`` with ``mode: "required"``, ``tools: T`` | ``ANY``, names of T |
| ``allowed_tools`` with ``mode: "auto"``, ``tools: T`` | ``AUTO``, only T declared |

Gemini honours ``allowedFunctionNames`` only with ``ANY``, so the ``auto`` subset is expressed
by declaring just those functions. Custom (free-text grammar) tools have no Gemini equivalent.

The Responses API writes the same things flat — ``{"type": "function", "name": ...}`` for a
tool and for a named ``tool_choice``, ``{"type": "allowed_tools", "mode": ..., "tools": ...}`` —
and reads them through :func:`function_declarations` and :func:`calling_config` with
``flat=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.errors import BadRequest
from proxy.openai.schema import json_schema_for_gemini
from proxy.openai.validate import opt_bool, opt_str, req_list, req_object, req_str
from proxy.wire.gemini import FunctionCallingConfig, FunctionDeclaration, Tool, ToolConfig

__all__ = ["calling_config", "function_declarations", "gemini_tools", "tools_to_gemini"]


def _function(obj: Mapping[str, Any], param: str, flat: bool) -> tuple[Mapping[str, Any], str]:
    """The object holding a function's fields, and its param path."""
    if flat:
        return obj, param
    return req_object(obj.get("function"), f"{param}.function"), f"{param}.function"


def _declaration(tool: Any, param: str, flat: bool) -> FunctionDeclaration:
    obj = req_object(tool, param)
    kind = req_str(obj.get("type"), f"{param}.type")
    if kind != "function":
        raise BadRequest(
            f"Unsupported tool type {kind!r} in '{param}.type': only 'function' tools are "
            "supported.",
            param=f"{param}.type",
            code="unsupported_value",
        )
    fn, p = _function(obj, param, flat)
    decl: FunctionDeclaration = {"name": req_str(fn.get("name"), f"{p}.name", non_empty=True)}
    description = opt_str(fn.get("description"), f"{p}.description")
    if description:
        decl["description"] = description
    if fn.get("parameters") is not None:
        decl["parametersJsonSchema"] = json_schema_for_gemini(fn["parameters"], f"{p}.parameters")
    opt_bool(fn.get("strict"), f"{p}.strict")  # validated, then dropped
    return decl


def _named(choice: Mapping[str, Any], param: str, flat: bool) -> str:
    fn, p = _function(choice, param, flat)
    return req_str(fn.get("name"), f"{p}.name", non_empty=True)


def _check_declared(names: list[str], declared: set[str], param: str) -> None:
    for name in names:
        if name not in declared:
            raise BadRequest(
                f"Invalid '{param}': function {name!r} is not among the declared tools.",
                param=param,
                code="invalid_value",
            )


def calling_config(
    choice: Any, decls: list[FunctionDeclaration], *, flat: bool = False
) -> tuple[list[FunctionDeclaration], FunctionCallingConfig | None]:
    """The declarations to send (narrowed by an ``auto`` allowed_tools) and the calling config
    for ``tool_choice``; a ``tool_choice`` type other than these is a 400."""
    declared = {d["name"] for d in decls}
    if choice is None:
        return decls, None
    if isinstance(choice, str):
        if choice in ("auto", "none"):
            return decls, ({"mode": "AUTO" if choice == "auto" else "NONE"} if decls else None)
        if choice == "required":
            if not decls:
                raise BadRequest(
                    "'tool_choice' is 'required' but no 'tools' were given.",
                    param="tool_choice",
                    code="invalid_value",
                )
            return decls, {"mode": "ANY"}
        raise BadRequest(
            f"Invalid 'tool_choice': {choice!r}; expected 'auto', 'none' or 'required', or an "
            "object naming a function.",
            param="tool_choice",
            code="invalid_value",
        )
    obj = req_object(choice, "tool_choice")
    kind = req_str(obj.get("type"), "tool_choice.type")
    if kind == "function":
        name = _named(obj, "tool_choice", flat)
        _check_declared([name], declared, _function(obj, "tool_choice", flat)[1] + ".name")
        return decls, {"mode": "ANY", "allowedFunctionNames": [name]}
    if kind == "allowed_tools":
        sp = "tool_choice" if flat else "tool_choice.allowed_tools"
        spec = obj if flat else req_object(obj.get("allowed_tools"), sp)
        mode = req_str(spec.get("mode"), f"{sp}.mode")
        items = req_list(spec.get("tools"), f"{sp}.tools", non_empty=True)
        names = [
            _named(req_object(t, f"{sp}.tools[{i}]"), f"{sp}.tools[{i}]", flat)
            for i, t in enumerate(items)
        ]
        _check_declared(names, declared, f"{sp}.tools")
        if mode == "required":
            return decls, {"mode": "ANY", "allowedFunctionNames": names}
        if mode == "auto":
            return [d for d in decls if d["name"] in names], {"mode": "AUTO"}
        raise BadRequest(
            f"Invalid '{sp}.mode': {mode!r}; expected 'auto' or 'required'.",
            param=f"{sp}.mode",
            code="invalid_value",
        )
    raise BadRequest(
        f"Unsupported 'tool_choice.type': {kind!r}; only function tools are supported.",
        param="tool_choice.type",
        code="unsupported_value",
    )


def function_declarations(
    tools: list[tuple[Any, str]], *, flat: bool = False
) -> list[FunctionDeclaration]:
    """Declarations for ``(tool, param)`` pairs; a duplicate name is a 400."""
    decls: list[FunctionDeclaration] = []
    seen: set[str] = set()
    for tool, param in tools:
        decl = _declaration(tool, param, flat)
        if decl["name"] in seen:
            p = f"{param}.name" if flat else f"{param}.function.name"
            raise BadRequest(
                f"Duplicate function name {decl['name']!r} in '{p}'.",
                param=p,
                code="invalid_value",
            )
        seen.add(decl["name"])
        decls.append(decl)
    return decls


def gemini_tools(
    decls: list[FunctionDeclaration], config: FunctionCallingConfig | None
) -> tuple[list[Tool], ToolConfig | None]:
    tools: list[Tool] = [{"functionDeclarations": decls}] if decls else []
    return tools, ({"functionCallingConfig": config} if config else None)


def tools_to_gemini(tools: Any, tool_choice: Any) -> tuple[list[Tool], ToolConfig | None]:
    """The request's ``tools`` and ``toolConfig`` (empty list / None when there is nothing)."""
    items = [] if tools is None else req_list(tools, "tools")
    decls = function_declarations([(t, f"tools[{i}]") for i, t in enumerate(items)])
    return gemini_tools(*calling_config(tool_choice, decls))
