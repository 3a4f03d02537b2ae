"""Structured output for the embedded model: GBNF grammars from JSON schemas, bounded so the
JSON always closes within the answer's token budget.

llama.cpp constrains decoding with a grammar: only tokens the grammar allows at that point
can be sampled, so what comes out parses as JSON of the schema by construction. One thing a
grammar alone does not give is an end: a small model can loop inside a string or an array
until `max_tokens` cuts it off mid-JSON. So every string without a `maxLength` and every
array without a `maxItems` gets one, derived from the token budget: the schema's worst case
(each string character counted as 3 tokens, the most a BMP character can take when the model
spells it byte by byte; every literal character as one token) must fit in `max_tokens`, or
the call is refused with a `StructuredOutputError` before anything is decoded.

The grammar's strings are JSON strings without control characters, `\\u` escapes or
characters beyond the BMP (emoji); Korean, CJK and every other BMP character is written
as itself. Grammars are cached per (schema, budget).
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any

from pipelines.errors import StructuredOutputError

TOKENS_PER_CHAR = 3  # worst case: a BMP character is at most 3 UTF-8 bytes, a token >= 1 byte
MAX_STRING = 256  # longest string the bound ever allows (grammar size grows with it)
ITEM_CHOICES = (8, 4, 2, 1)  # maxItems tried, largest first, for arrays without one
INTEGER_COST = 18  # "-", 16 digits, the space after: llama.cpp's integer rule
NUMBER_COST = 53  # sign, 16 + "." 16 digits, exponent of 16 digits, space
FORMAT_COSTS = {"date": 13, "time": 23, "date-time": 34}
# JSON string characters: no control characters, no \u escapes, BMP only.
CHAR_RULE = r'char ::= [^"\\\x00-\x1F\U00010000-\U0010FFFF] | "\\" ["\\/bfnrt]'


class _Unbounded(Exception):
    """The schema has a part whose length no bound can limit; the message says which."""


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with local `$ref`s replaced by their definitions, type lists as `anyOf`
    and `allOf` of objects merged: a tree the bound can walk."""
    defs: dict[str, Any] = {**schema.get("definitions", {}), **schema.get("$defs", {})}

    def visit(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [visit(n, seen) for n in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if not ref.startswith("#/") or name not in defs:
                raise _Unbounded(f"the reference {ref} (only local $defs are followed)")
            if name in seen:
                raise _Unbounded(f"the recursive definition {name}")
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return visit({**defs[name], **rest}, (*seen, name))
        out = {
            k: visit(v, seen) if k not in ("enum", "const", "default", "examples") else v
            for k, v in node.items()
            if k not in ("$defs", "definitions")
        }
        types = out.get("type")
        if isinstance(types, list):
            rest = {k: v for k, v in out.items() if k != "type"}
            return {"anyOf": [{**rest, "type": t} for t in types]}
        if "allOf" in out and "properties" not in out:
            parts = out.pop("allOf")
            if len(parts) == 1:
                return {**parts[0], **out}
            if all("properties" in p for p in parts):
                merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
                for part in parts:
                    merged["properties"].update(part["properties"])
                    merged["required"] += part.get("required", [])
                return {**out, **merged}
            raise _Unbounded("an allOf that is not a set of objects")
        return out

    result = visit(schema, ())
    if not isinstance(result, dict):
        raise _Unbounded("a schema that is not an object")
    return result


def _bound(node: dict[str, Any], length: int, items: int) -> tuple[dict[str, Any], int]:
    """(node with every string and array bounded, its worst-case cost in tokens) when
    unbounded strings get `length` characters and unbounded arrays `items` items.

    Mirrors the order in which llama.cpp's converter reads a schema (llama_grammar.py).
    """
    kind = node.get("type")
    if "oneOf" in node or "anyOf" in node:
        key = "oneOf" if "oneOf" in node else "anyOf"
        bounded = [_bound(alt, length, items) for alt in node[key]]
        return {**node, key: [b for b, _ in bounded]}, max(c for _, c in bounded)
    if "const" in node:
        return node, len(json.dumps(node["const"])) + 1
    if "enum" in node:
        return node, max(len(json.dumps(v)) for v in node["enum"]) + 1
    if kind in (None, "object") and ("properties" in node or "additionalProperties" in node):
        extra = node.get("additionalProperties")
        if extra is True or isinstance(extra, dict):
            raise _Unbounded("an object with additionalProperties (any number of keys)")
        properties, cost = {}, 4  # "{" space ... "}" space
        for name, sub in node.get("properties", {}).items():
            properties[name], value = _bound(sub, length, items)
            cost += len(json.dumps(name)) + 3 + value + 2  # key space ":" space value "," space
        return {**node, "properties": properties}, cost
    if kind in (None, "array") and ("items" in node or "prefixItems" in node):
        key = "items" if node.get("items") else "prefixItems"  # as llama.cpp picks
        listed = node[key]
        if isinstance(listed, list):
            bounded = [_bound(n, length, items) for n in listed]
            return {**node, key: [b for b, _ in bounded]}, 4 + sum(c + 2 for _, c in bounded)
        if not isinstance(listed, dict):
            raise _Unbounded("an array whose items have no schema")
        item, each = _bound(listed, length, items)
        least = int(node.get("minItems", 0))
        most = int(node.get("maxItems", max(items, least)))
        return {**node, "items": item, "maxItems": most}, 4 + most * (each + 2)
    if kind in (None, "string") and "pattern" in node:
        raise _Unbounded("a string with a pattern")
    if kind in (None, "string") and str(node.get("format", "")).startswith("uuid"):
        return node, 39
    if kind in (None, "string") and node.get("format") in FORMAT_COSTS:
        return node, FORMAT_COSTS[node["format"]]
    if kind == "string":
        least = int(node.get("minLength", 0))
        most = int(node.get("maxLength", max(length, least)))
        return {**node, "maxLength": most}, 3 + TOKENS_PER_CHAR * most
    if kind == "integer":
        return node, INTEGER_COST
    if kind == "number":
        return node, NUMBER_COST
    if kind == "boolean":
        return node, 6
    if kind == "null":
        return node, 5
    if kind == "array":
        raise _Unbounded("an array without items")
    raise _Unbounded("a free-form value (an object without properties, or any type)")


def bounded_schema(schema: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """The schema with `maxLength`/`maxItems` on every string and array, as long as the
    worst case still fits in `max_tokens` (one token kept for the end of the answer)."""
    budget = max_tokens - 1
    try:
        tree = _inline(copy.deepcopy(schema))
        least = min(_bound(tree, 1, items)[1] for items in ITEM_CHOICES)
        for items in ITEM_CHOICES:
            # The cost grows with the string length (not linearly: anyOf takes the largest
            # branch), so find the longest that fits by bisection.
            low, high = 0, MAX_STRING
            while low < high:
                middle = (low + high + 1) // 2
                if _bound(tree, middle, items)[1] <= budget:
                    low = middle
                else:
                    high = middle - 1
            bounded, cost = _bound(tree, max(low, 1), items)
            if cost <= budget:
                return bounded
    except _Unbounded as exc:
        raise StructuredOutputError(
            f"llamapipe cannot bound the length of this schema: it has {exc}",
            hint="give that part a fixed shape (properties, items, maxLength), or use "
            'method="json_mode"',
        ) from None
    need = least + 1
    raise StructuredOutputError(
        f"an answer to this schema can take up to {need} tokens even with one-character "
        f"strings and one-item lists, but max_tokens is {max_tokens}",
        hint=f"raise --max-tokens (LLAMAPIPE_MAX_TOKENS) above {need} (what is left over "
        "goes to the free strings), or simplify the schema",
    )


SPACE_RULE = 'space ::= " "?'  # what the costs above count; newer converters allow more


def _with_char_rule(grammar: str) -> str:
    """The converter's grammar with our string characters and at most one space."""
    lines = [
        line for line in grammar.splitlines() if not line.startswith(("char ::=", "space ::="))
    ]
    return "\n".join([*lines, SPACE_RULE, CHAR_RULE]) + "\n"


@lru_cache(maxsize=128)
def schema_grammar(schema_json: str, max_tokens: int) -> str:
    """GBNF for one JSON schema (as canonical JSON) within `max_tokens`; cached."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    bounded = bounded_schema(json.loads(schema_json), max_tokens)
    return _with_char_rule(json_schema_to_gbnf(json.dumps(bounded)))


# JSON mode: any flat JSON object: up to @MEMBERS@ members with ASCII keys, whose values are
# strings, numbers, booleans, null or lists of those, every length bounded.
_JSON_MODE = r"""root ::= "{" space ( kv ( "," space kv ){0,@MORE@} )? "}" space
kv ::= "\"" [a-zA-Z0-9_ -]{1,@KEY@} "\"" space ":" space value
value ::= scalar@LIST@
list ::= "[" space ( scalar ( "," space scalar ){0,@ITEMS@} )? "]" space
scalar ::= string | number | "true" space | "false" space | "null" space
string ::= "\"" char{0,@LENGTH@} "\"" space
number ::= "-"? [0-9]{1,12} ( "." [0-9]{1,6} )? space
space ::= " "?
"""
JSON_MODE_KEY = 16  # ASCII key characters: one token each at worst
JSON_MODE_SHAPES = (  # (members, string length), most generous first
    (8, 64),
    (8, 32),
    (6, 32),
    (4, 32),
    (4, 16),
    (3, 16),
    (2, 16),
    (2, 8),
    (2, 4),
    (1, 4),
)


def _json_mode_cost(members: int, items: int, length: int) -> int:
    key = 3 + JSON_MODE_KEY + 3  # quotes, key, space ":" space
    scalar = max(3 + TOKENS_PER_CHAR * length, 21)  # a string, or "-" 12 "." 6 digits space
    listed = 4 + items * (scalar + 2) if items else 0
    return 4 + members * (key + max(scalar, listed) + 2)


@lru_cache(maxsize=32)
def json_mode_grammar(max_tokens: int) -> str:
    """GBNF for a JSON object whose worst case fits in `max_tokens`; cached."""
    budget = max_tokens - 1
    for members, length in JSON_MODE_SHAPES:
        for items in (8, 4, 2, 0):
            if _json_mode_cost(members, items, length) <= budget:
                text = (
                    _JSON_MODE.replace("@MORE@", str(members - 1))
                    .replace("@KEY@", str(JSON_MODE_KEY))
                    .replace("@LIST@", " | list" if items else "")
                    .replace("@ITEMS@", str(max(0, items - 1)))
                    .replace("@LENGTH@", str(length))
                )
                if not items:
                    text = "\n".join(r for r in text.splitlines() if not r.startswith("list"))
                return text.rstrip("\n") + "\n" + CHAR_RULE + "\n"
    need = _json_mode_cost(1, 0, 4) + 1
    raise StructuredOutputError(
        f"a JSON object with one short member can take {need} tokens, but max_tokens is "
        f"{max_tokens}",
        hint=f"raise --max-tokens (LLAMAPIPE_MAX_TOKENS) to at least {need}",
    )


def grammar_text(schema: dict[str, Any] | None, max_tokens: int) -> str:
    """The grammar for a `response_format` schema (None: JSON mode) within `max_tokens`."""
    if schema is None:
        return json_mode_grammar(max_tokens)
    return schema_grammar(json.dumps(schema), max_tokens)  # key order is field order


# -- with_structured_output for the embedded chat model -------------------------------------


def json_schema_of(schema: dict[str, Any] | type) -> dict[str, Any]:
    """The JSON schema of a pydantic class (v2 or v1), a TypedDict, an OpenAI function
    or tool, or a JSON schema itself."""
    from langchain_core.utils.function_calling import convert_to_json_schema
    from langchain_core.utils.pydantic import is_basemodel_subclass
    from typing_extensions import is_typeddict

    if isinstance(schema, type) and is_basemodel_subclass(schema):
        if hasattr(schema, "model_json_schema"):
            return dict(schema.model_json_schema())
        return dict(schema.schema())  # type: ignore[attr-defined]  # pydantic.v1
    if is_typeddict(schema):
        converted = convert_to_json_schema(schema)
        converted.setdefault("required", list(converted.get("properties", {})))
        return converted
    if isinstance(schema, dict):
        given: dict[str, Any] = schema
        if given.get("type") == "function" and isinstance(given.get("function"), dict):
            given = given["function"]
        if "name" in given and isinstance(given.get("parameters"), dict):
            return dict(given["parameters"])
        return dict(given)
    raise StructuredOutputError(
        f"cannot make a JSON schema of {schema!r}",
        hint="pass a pydantic class, a TypedDict or a JSON-schema dict",
    )


def response_format_schema(response_format: Any) -> dict[str, Any] | None:
    """The schema a `response_format` asks for, None for plain JSON mode. Accepts
    llama-cpp-python's {"type": "json_object", "schema": ...} and OpenAI's
    {"type": "json_schema", "json_schema": {"schema": ...}}."""
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_object":
            schema = response_format.get("schema")
            if schema is None or isinstance(schema, dict):
                return schema
        if kind == "json_schema" and isinstance(response_format.get("json_schema"), dict):
            schema = response_format["json_schema"].get("schema")
            if isinstance(schema, dict):
                return schema
    raise StructuredOutputError(
        f"unknown response_format {response_format!r}",
        hint='use {"type": "json_object"} or {"type": "json_object", "schema": {...}}',
    )


def structured_output(
    llm: Any,
    schema: dict[str, Any] | type | None,
    method: str,
    include_raw: bool,
    kwargs: dict[str, Any],
) -> Any:
    """`with_structured_output` as ChatOllama and ChatOpenAI do it: the model bound to a
    `response_format`, then a parser; with `include_raw`, {"raw", "parsed",
    "parsing_error"} where a parse failure lands instead of raising. The model has no
    tool calling, so method "function_calling" holds the answer to the schema's grammar
    just as "json_schema" does."""
    from operator import itemgetter

    from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
    from langchain_core.runnables import RunnableMap, RunnablePassthrough
    from langchain_core.utils.pydantic import is_basemodel_subclass

    from pipelines.errors import UsageError

    kwargs = dict(kwargs)
    kwargs.pop("strict", None)  # a grammar is always strict
    if kwargs:
        raise UsageError(f"with_structured_output got unknown arguments {sorted(kwargs)}")
    if method not in ("json_schema", "json_mode", "function_calling"):
        raise UsageError(
            f"unknown structured-output method {method!r}",
            hint='use "json_schema" or "json_mode"',
        )
    if schema is None and method != "json_mode":
        raise UsageError(
            f"method={method!r} needs a schema", hint='pass one, or use method="json_mode"'
        )
    is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    # Without tool calling, "function_calling" is what a tool call would give: arguments
    # that match the schema, so it takes the same grammar as "json_schema".
    if method != "json_mode":
        assert schema is not None
        json_schema = json_schema_of(schema)
        bound = llm.bind(
            response_format={"type": "json_object", "schema": json_schema},
            ls_structured_output_format={
                "kwargs": {"method": method},
                "schema": schema,
            },
        )
    else:
        bound = llm.bind(
            response_format={"type": "json_object"},
            ls_structured_output_format={"kwargs": {"method": method}, "schema": schema},
        )
    parser: Any = (
        PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
        if is_pydantic
        else JsonOutputParser()
    )
    if not include_raw:
        return bound | parser
    parsed = RunnablePassthrough.assign(
        parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
    )
    fallback = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=bound) | parsed.with_fallbacks([fallback], exception_key="parsing_error")
