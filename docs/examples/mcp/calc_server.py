"""A tiny MCP server (stdio) for the README's worked example: `omni-llm serve` starts it on first use.

Any MCP server works the same way; this one is written with the `mcp` SDK's server API.
"""

from mcp.server.mcpserver import MCPServer

server = MCPServer("calc")


@server.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@server.tool()
def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


if __name__ == "__main__":
    server.run()
