"""MCP tools for any model (CONTRACT §11): the gateway as an MCP client of the operator's servers.

Imported only when a request carries `mcp` or an MCP route is hit: `import
proxy.app` loads none of it (nor the `mcp` SDK, which costs ~0.6 s to import).
"""
