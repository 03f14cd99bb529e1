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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.errors import BadRequest
from proxy.openai.schema import json_schema_for_gemini
from proxy.openai.validate import opt_bool, opt_str, req_list, req_object, req_str
from proxy.wire.gemini import FunctionCallingConfig, FunctionDeclaration, Tool, ToolConfig

__all__ = ["tools_to_gemini"]


def _declaration(tool: Any, param: str) -> FunctionDeclaration:
    obj = req_object(tool, param)
    kind = req_str(obj.get("type"), f"{param}.type")
    if kind != "function":
        raise BadRequest(
            f"Unsupported tool type {kind!r} in '{param}.type': only 'function' tools are "
            "supported.",
            param=f"{param}.type",
            code="unsupported_value",
        )
    fn = req_object(obj.get("function"), f"{param}.function")
    decl: FunctionDeclaration = {
        "name": req_str(fn.get("name"), f"{param}.function.name", non_empty=True)
    }
    description = opt_str(fn.get("description"), f"{param}.function.description")
    if description:
        decl["description"] = description
    if fn.get("parameters") is not None:
        decl["parametersJsonSchema"] = json_schema_for_gemini(
            fn["parameters"], f"{param}.function.parameters"
        )
    opt_bool(fn.get("strict"), f"{param}.function.strict")  # validated, then dropped
    return decl


def _named(choice: Mapping[str, Any], param: str) -> str:
    fn = req_object(choice.get("function"), f"{param}.function")
    return req_str(fn.get("name"), f"{param}.function.name", non_empty=True)


def _check_declared(names: list[str], declared: set[str], param: str) -> None:
    for name in names:
        if name not in declared:
            raise BadRequest(
                f"Invalid '{param}': function {name!r} is not among the declared tools.",
                param=param,
                code="invalid_value",
            )


def _config(
    choice: Any, decls: list[FunctionDeclaration]
) -> tuple[list[FunctionDeclaration], FunctionCallingConfig | None]:
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
        name = _named(obj, "tool_choice")
        _check_declared([name], declared, "tool_choice.function.name")
        return decls, {"mode": "ANY", "allowedFunctionNames": [name]}
    if kind == "allowed_tools":
        spec = req_object(obj.get("allowed_tools"), "tool_choice.allowed_tools")
        mode = req_str(spec.get("mode"), "tool_choice.allowed_tools.mode")
        items = req_list(spec.get("tools"), "tool_choice.allowed_tools.tools", non_empty=True)
        names = [
            _named(
                req_object(t, f"tool_choice.allowed_tools.tools[{i}]"),
                f"tool_choice.allowed_tools.tools[{i}]",
            )
            for i, t in enumerate(items)
        ]
        _check_declared(names, declared, "tool_choice.allowed_tools.tools")
        if mode == "required":
            return decls, {"mode": "ANY", "allowedFunctionNames": names}
        if mode == "auto":
            return [d for d in decls if d["name"] in names], {"mode": "AUTO"}
        raise BadRequest(
            f"Invalid 'tool_choice.allowed_tools.mode': {mode!r}; expected 'auto' or 'required'.",
            param="tool_choice.allowed_tools.mode",
            code="invalid_value",
        )
    raise BadRequest(
        f"Unsupported 'tool_choice.type': {kind!r}; only function tools are supported.",
        param="tool_choice.type",
        code="unsupported_value",
    )


def tools_to_gemini(tools: Any, tool_choice: Any) -> tuple[list[Tool], ToolConfig | None]:
    """The request's ``tools`` and ``toolConfig`` (empty list / None when there is nothing)."""
    items = [] if tools is None else req_list(tools, "tools")
    decls: list[FunctionDeclaration] = []
    seen: set[str] = set()
    for i, tool in enumerate(items):
        decl = _declaration(tool, f"tools[{i}]")
        if decl["name"] in seen:
            raise BadRequest(
                f"Duplicate function name {decl['name']!r} in 'tools[{i}].function.name'.",
                param=f"tools[{i}].function.name",
                code="invalid_value",
            )
        seen.add(decl["name"])
        decls.append(decl)
    decls, config = _config(tool_choice, decls)
    gemini_tools: list[Tool] = [{"functionDeclarations": decls}] if decls else []
    return gemini_tools, ({"functionCallingConfig": config} if config else None)
