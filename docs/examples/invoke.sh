# The seed API (`POST /invoke`, README: "The seed API") with the keyless `demo` model: the seed
# documents' examples — structured extraction, multi-modal analysis, the full request — as printed.
# The shipped strategies skip providers that have no key, so `balanced` ends at `demo` here.

# Structured extraction (the seed README's variant: structured_output_enabled + a simple-format schema)
curl http://127.0.0.1:8000/invoke -H "content-type: application/json" -H "x-api-key: ${OMNI_LLM_API_KEY:-}" -d '{
  "prompt": "Extract the person: Ada Lovelace, mathematician, London.",
  "model_provider": "openai", "model_name": "demo", "fallback_strategy": "balanced",
  "structured_output_enabled": true,
  "structured_output_schema": {"name": "string", "occupation": "string", "city": "string", "skills": ["array of strings"]}
}'
# prints: "success":true

# Multi-modal analysis (image_url: a data: or https: URL)
curl http://127.0.0.1:8000/invoke -H "content-type: application/json" -d '{
  "prompt": "Describe this image.", "model_name": "demo",
  "image_url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
  "model_config": {"max_tokens": 100}
}'
# prints: "finish_reason":"stop"

# The full request: every seed field at once (rag_config below; mcp_config needs an MCP
# server of your config: see README "MCP tools")
curl http://127.0.0.1:8000/invoke -H "content-type: application/json" -d '{
  "prompt": "Summarise our refund policy in one sentence.",
  "model_provider": "anthropic", "model_name": "demo",
  "model_config": {"temperature": 0.2, "max_tokens": 200, "top_p": 0.9, "top_k": 40, "frequency_penalty": 0,
                   "presence_penalty": 0, "stop_sequences": ["END"], "seed": 7, "stream": false,
                   "response_format": "structured"},
  "system_prompt": "You are a concise assistant.",
  "context": "Refunds are accepted within 30 days with a receipt.",
  "fallback_strategy": "quality_optimized",
  "structured_output": {"enabled": true, "schema": {"summary": "string", "days": "integer"}, "method": "json_schema"},
  "output_config": {"include_sources": true, "include_metadata": true}
}'
# prints: "model_used":"demo"

# A stream: the same SSE as /v1/chat/completions
curl -N http://127.0.0.1:8000/invoke -d '{"prompt": "hello there", "model_name": "demo", "model_config": {"stream": true}}'
# prints: data: [DONE]

# RAG document query (the seed's rag_config): upload a document, make it a collection, ask about it
file_id=$(curl -s http://127.0.0.1:8000/v1/files -F purpose=assistants -F "file=@README.md" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
store="seed-docs-$RANDOM$RANDOM"
curl -s http://127.0.0.1:8000/v1/vector_stores -H "content-type: application/json" -d "{\"name\": \"$store\", \"file_ids\": [\"$file_id\"]}" >/dev/null
curl http://127.0.0.1:8000/invoke -H "content-type: application/json" -d "{
  \"prompt\": \"Which model needs no keys?\", \"model_name\": \"demo\",
  \"rag_config\": {\"collection\": \"$store\", \"top_k\": 3},
  \"output_config\": {\"include_sources\": true}
}"
# prints: "rag_context":[{"content"
