"""The Responses API and legacy completions on the offline `demo` model (run by the suite as printed)."""

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused-without-gateway-keys")

# Streamed text with the SDK's stream helper
with client.responses.stream(model="demo", input="hello there", instructions="Be brief.") as stream:
    for event in stream:
        if event.type == "response.output_text.delta":
            print(event.delta, end="")
    print()
    print(stream.get_final_response().status)
# prints: You said: hello there
# prints: completed

# A function tool, then its result sent back as input items (stateless: the whole history each time)
weather = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
first = client.responses.create(model="demo", input="what is the weather? use get_weather", tools=[weather])
call = next(item for item in first.output if item.type == "function_call")
print(call.name)
# prints: get_weather
second = client.responses.create(model="demo", tools=[weather], input=[
    {"role": "user", "content": "what is the weather? use get_weather"},
    {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
    {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"},
])
print(second.output_text)
# prints: sunny, 21C

# Structured output with text.format json_schema
answer = client.responses.create(model="demo", input="Rome", text={"format": {
    "type": "json_schema", "name": "city", "strict": True, "schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
        "additionalProperties": False}}})
print(answer.output_text)
# prints: {"city": "Rome"}

# The SDK's parse helper: a Pydantic model as text.format, the answer parsed back into it
from pydantic import BaseModel


class City(BaseModel):
    city: str
    population: int


parsed = client.responses.parse(model="demo", input="Lisbon", text_format=City)
print(type(parsed.output_parsed).__name__, parsed.output_parsed.city)
# prints: City Lisbon

# Legacy text completions: two prompts, echoed
legacy = client.completions.create(model="demo", prompt=["one", "two"], echo=True, max_tokens=5)
print([choice.text for choice in legacy.choices])
# prints: ['oneYou said: one', 'twoYou said: two']
