"""`structured_output` (CONTRACT §9): the answer parses and validates against a schema, or a clear 502.

- `format`: the simple format compiled to JSON Schema (pure, `format.py`);
- `spec`: the request field checked and compiled once per distinct value;
- `validate`: answers checked with jsonschema-rs, validators cached by canonical schema;
- `step`: the pipeline step — request rewrite per method, repair rounds, fallbacks, `parsed`;
- `streaming`: the stream wrapper (tool arguments as content, top-level arrays unwrapped, end check).

Nothing here is imported by `import proxy.app`; `proxy.pipeline` loads `step` on the first request with the field.
"""
