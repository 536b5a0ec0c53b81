"""Client paths of the offline `demo` model that the README does not show (run by the suite as printed)."""

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused-without-gateway-keys")

# JSON mode with the schema in the system prompt, as the AI SDK's generateObject and
# LangChain's json_mode send it: the answer is an instance of that schema.
schema = '{"type": "object", "properties": {"city": {"type": "string"}, "rating": {"type": "integer", "minimum": 1, "maximum": 5}}, "required": ["city", "rating"]}'
answer = client.chat.completions.create(
    model="demo", response_format={"type": "json_object"},
    messages=[{"role": "system", "content": f"JSON schema:\n{schema}\nYou MUST answer with a JSON object that matches the JSON schema above."},
              {"role": "user", "content": "Rome"}],
)
print(answer.choices[0].message.content)
# prints: {"city": "Rome", "rating": 3}

# n choices, a token budget, and reasoning
many = client.chat.completions.create(model="demo", n=2, max_tokens=3, reasoning_effort="low",
                                      messages=[{"role": "user", "content": "count to ten please"}])
for choice in many.choices:
    print(choice.index, choice.finish_reason, repr(choice.message.content))
print(many.choices[0].message.model_extra["reasoning_content"])
print(many.usage.completion_tokens_details.reasoning_tokens > 0)
# prints: 1 length 'You said: count'
# prints: The user wrote "count to ten please".
# prints: True

# Parallel tool calls, streamed: the argument fragments add up to JSON
tools = [{"type": "function", "function": {"name": name, "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    for name in ("get_weather", "get_time")]
calls = {}
for chunk in client.chat.completions.create(model="demo", stream=True, tools=tools,
                                            messages=[{"role": "user", "content": "use get_weather and get_time"}]):
    for delta in chunk.choices[0].delta.tool_calls or []:
        entry = calls.setdefault(delta.index, {"name": "", "arguments": ""})
        entry["name"] += delta.function.name or ""
        entry["arguments"] += delta.function.arguments or ""
print(calls)
# prints: {0: {'name': 'get_weather', 'arguments': '{"city": "use get_weather and get_time"}'}, 1: {'name': 'get_time',

# A token-id array is one embedding input
print(len(client.embeddings.create(model="demo-embedding", input=[15339, 1917]).data))
# prints: 1
