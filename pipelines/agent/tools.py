"""Tools a sandboxed program may call through the channel, and their registry.

A `Tool` is a name, a description, a pydantic model of its arguments, the host function and
a cap on the size of its result (as JSON). The `ToolBox` builds the model from a plain typed
function's signature (every parameter annotated, no `*args`/`**kwargs`, unknown fields
refused, no coercion of "3" into 3), or takes a LangChain tool's own `args_schema`.

A registered tool runs in the host with the host's rights: it is exactly as dangerous as the
function it wraps. The channel only makes sure that what reaches it is a validated call.
"""

from __future__ import annotations

import ast
import inspect
import keyword
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from pipelines.rag.citations import Passage

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
RESULT_BYTES = 16 << 10  # a tool's result, as JSON, by default


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[BaseModel]
    func: Callable[..., Any] = field(repr=False)
    result_bytes: int = RESULT_BYTES

    def run(self, args: BaseModel) -> Any:
        """Call the host function with validated arguments."""
        return self.func(**{name: getattr(args, name) for name in type(args).model_fields})

    def schema(self) -> dict[str, Any]:
        """What a prompt shows the model: name, description, JSON schema of the arguments."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.args.model_json_schema(),
        }


def _check_name(name: str) -> str:
    if not NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ValueError(f"tool name {name!r} is not an identifier of at most 64 characters")
    return name


def args_model(func: Callable[..., Any], name: str) -> type[BaseModel]:
    """A strict pydantic model of `func`'s parameters (validate_call's rules, as a model)."""
    target: Any = func
    if not (inspect.isfunction(func) or inspect.ismethod(func)):
        target = type(func).__call__  # a callable object: its __call__'s annotations

    class Parameters:  # the parameters' annotations only: the return's may not resolve
        __annotations__ = {
            k: v for k, v in getattr(target, "__annotations__", {}).items() if k != "return"
        }
        __globals__ = getattr(target, "__globals__", {})

    try:
        scope = inspect.getclosurevars(target).nonlocals if inspect.isfunction(target) else {}
        hints = get_type_hints(
            Parameters, globalns=Parameters.__globals__, localns=scope, include_extras=True
        )
    except Exception as exc:  # an annotation naming something out of scope
        raise TypeError(f"tool {name}: cannot read its type annotations ({exc})") from None
    fields: dict[str, Any] = {}
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise TypeError(f"tool {name}: parameter {param.name} must be a plain keyword one")
        if param.name not in hints:
            raise TypeError(f"tool {name}: parameter {param.name} has no type annotation")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints[param.name], default)
    config = ConfigDict(extra="forbid", strict=True)
    model: type[BaseModel] = create_model(f"{name}_args", __config__=config, **fields)
    return model


def _langchain_tool(obj: Any) -> bool:
    try:
        from langchain_core.tools import BaseTool
    except ImportError:  # pragma: no cover - langchain-core is a dependency
        return False
    return isinstance(obj, BaseTool)


class ToolBox:
    """The tools one run may call, by unique identifier-like name."""

    def __init__(self, tools: list[Any] | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools or []:
            self.register(tool)

    def register(
        self,
        obj: Any,
        *,
        name: str | None = None,
        description: str | None = None,
        result_bytes: int | None = None,
    ) -> Tool:
        """Add a `Tool`, a LangChain tool (`@tool`, any `BaseTool` with a pydantic
        `args_schema`) or a plain typed function; returns the `Tool` registered."""
        if isinstance(obj, Tool):
            tool = obj
        elif _langchain_tool(obj):
            schema = obj.args_schema
            if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
                raise TypeError(f"tool {obj.name}: its args_schema is not a pydantic model")

            def invoke(**kwargs: Any) -> Any:
                return obj.invoke(kwargs)

            tool = Tool(obj.name, obj.description or "", schema, invoke)
        elif callable(obj):
            tool_name = str(name or getattr(obj, "__name__", ""))
            _check_name(tool_name)
            doc = inspect.getdoc(obj) or ""
            tool = Tool(tool_name, doc, args_model(obj, tool_name), obj)
        else:
            raise TypeError(f"cannot make a tool of {type(obj).__name__}")
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = name
        if description is not None:
            changes["description"] = description
        if result_bytes is not None:
            changes["result_bytes"] = result_bytes
        if changes:
            tool = Tool(**{**tool.__dict__, **changes})
        _check_name(tool.name)
        if tool.result_bytes < 1:
            raise ValueError(f"tool {tool.name}: result_bytes must be positive")
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name} is registered already")
        self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> list[str]:
        return sorted(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        return [self._tools[n].schema() for n in self.names]


# -- the calculator --------------------------------------------------------------------------


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot evaluate."""


EXPRESSION_CHARS = 1000
MAX_NODES = 200
INT_BITS = 256  # integers beyond 2**256 are refused (9**9**9 never gets computed)

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


def _round(value: Number, ndigits: Number | None = None) -> Number:
    """round(), with ndigits bounded: round(10**70, -10**7) would compute 10**(10**7)."""
    if ndigits is None:
        return round(value)
    if not isinstance(ndigits, int) or abs(ndigits) > 400:
        raise CalculatorError("round's digits must be an integer between -400 and 400")
    return round(value, ndigits)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log10": math.log10,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "floor": math.floor,
    "ceil": math.ceil, "abs": abs, "round": _round, "min": min, "max": max,
}  # fmt: skip
_CONSTANTS = {"pi": math.pi, "e": math.e}

Number = int | float


def _checked(value: Any) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CalculatorError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > INT_BITS:
        raise CalculatorError(f"an integer grew beyond {INT_BITS} bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("the result is not a finite number")
    return value


def _power(base: Number, exponent: Number) -> Number:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if abs(base) > 1 and (abs(base).bit_length() - 1) * exponent > INT_BITS:
            raise CalculatorError(f"an integer grew beyond {INT_BITS} bits")
    elif isinstance(exponent, int) and abs(exponent) > 10_000:
        raise CalculatorError("the exponent is too large")
    return _checked(math.pow(base, exponent) if isinstance(base, float) else base**exponent)


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        return _checked(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _power(left, right)
        if (
            isinstance(node.op, ast.Mult)
            and isinstance(left, int)
            and isinstance(right, int)
            and left.bit_length() + right.bit_length() > INT_BITS + 1
        ):
            raise CalculatorError(f"an integer grew beyond {INT_BITS} bits")
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
        and node.args
        and not any(isinstance(a, ast.Starred) for a in node.args)
    ):
        return _checked(_FUNCTIONS[node.func.id](*(_eval(a) for a in node.args)))
    if isinstance(node, ast.Call | ast.Name):
        raise CalculatorError(f"unknown name or call: {ast.unparse(node)[:80]}")
    raise CalculatorError(f"not arithmetic: {type(node).__name__}")


def calculator(expression: Annotated[str, Field(max_length=EXPRESSION_CHARS)]) -> Number:
    """Evaluate arithmetic: numbers, + - * / // % **, parentheses, pi, e and sqrt exp log
    log10 sin cos tan floor ceil abs round min max. Nothing else (no names, attributes or
    other calls); integers are bounded to 256 bits."""
    if len(expression) > EXPRESSION_CHARS:
        raise CalculatorError(f"the expression is longer than {EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:
        reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        raise CalculatorError(f"not an expression: {reason}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculatorError(f"the expression has more than {MAX_NODES} parts")
    try:
        return _eval(tree)
    except CalculatorError:
        raise
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise CalculatorError(f"{type(exc).__name__}: {exc}") from None


# -- search over an index --------------------------------------------------------------------


class SearchTool:
    """`search(query, k)` over an index; every passage it returns has been checked:
    `index.document_text(source)[start:end] == text`. `seen` keeps them, numbered in the
    order returned, for the citation check of the final answer (as in `rag ask`)."""

    def __init__(self, source: Any, k_max: int = 10) -> None:
        from pipelines.rag.index import Index
        from pipelines.rag.retriever import IndexRetriever

        if isinstance(source, IndexRetriever):
            self.retriever = source
        elif isinstance(source, Index):
            self.retriever = IndexRetriever(index=source)
        elif isinstance(getattr(source, "retriever", None), IndexRetriever):  # a RAG
            self.retriever = source.retriever
        else:
            raise TypeError(f"search_tool needs an Index, IndexRetriever or RAG, not {source!r}")
        self.index = self.retriever.index
        self.k_max = k_max
        self.seen: list[Passage] = []
        self.unverified = 0  # passages dropped because their offsets did not hold

    def __call__(self, query: str, k: int = 3) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        texts: dict[str, str] = {}
        for hit, score in self.retriever.hits(query, min(k, self.k_max)):
            c = hit.chunk
            if c.source not in texts:
                texts[c.source] = self.index.document_text(c.source)
            if texts[c.source][c.start : c.end] != c.text:
                self.unverified += 1
                continue
            known = next(
                (p for p in self.seen if (p.source, p.start, p.end) == (c.source, c.start, c.end)),
                None,
            )
            if known is None:
                known = Passage(len(self.seen) + 1, c.source, c.chunk_id, c.start, c.end, c.page)
                self.seen.append(known)
            out.append(
                {
                    "n": known.n, "source": c.source, "start": c.start, "end": c.end,
                    "page": c.page, "score": round(score, 6), "text": c.text,
                }
            )  # fmt: skip
        return out


def search_tool(source: Any, k: int = 10, result_bytes: int = 64 << 10) -> Tool:
    """The `search(query, k=3)` tool over an `Index` (or `IndexRetriever`, or `RAG`); `k`
    bounds what a call may ask for. The `SearchTool` is the returned tool's `func`."""
    impl = SearchTool(source, k_max=k)
    args = create_model(
        "search_args",
        __config__=ConfigDict(extra="forbid", strict=True),
        query=(Annotated[str, Field(min_length=1, max_length=2000)], ...),
        k=(Annotated[int, Field(ge=1, le=k)], 3),
    )
    description = (
        "Search the indexed documents. Returns passages best first, each with n, source, "
        "start, end, page, score and text (the exact text at source[start:end])."
    )
    return Tool("search", description, args, impl, result_bytes)


def calculator_tool() -> Tool:
    return Tool(
        "calculator",
        inspect.getdoc(calculator) or "",
        args_model(calculator, "calculator"),
        calculator,
        4 << 10,
    )
