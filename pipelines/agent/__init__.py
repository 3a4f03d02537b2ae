"""The code agent's host side (issue 24, items 4-5): work in progress.

What exists:

- `pipelines.agent.tools`: `Tool`, the `ToolBox` registry (plain typed functions, LangChain
  tools), the built-in `calculator` and the `search_tool(index)` factory whose passages carry
  offsets the host has verified against the stored document.
- `pipelines.agent.channel`: the one narrow channel a program's tool calls cross: framed,
  strict JSON requests, validated against each tool's pydantic schema, bounded in frame
  size, calls and bytes per run; `Dispatcher` answers every frame with exactly one reply.
- `pipelines.agent.client`: the program's side (`tools.call(tool, **args)`, `final(answer)`),
  pure Python, run inside the sandbox: `Sandbox.run(code, tools=Dispatcher(box))`.

See docs/agent.md for the design and the wall, written down.
"""

from pipelines.agent.channel import ChannelLimits, Dispatcher, client_source, serve
from pipelines.agent.tools import Tool, ToolBox, calculator, search_tool

__all__ = [
    "ChannelLimits",
    "Dispatcher",
    "Tool",
    "ToolBox",
    "calculator",
    "client_source",
    "search_tool",
    "serve",
]
