# Claude Code's settings for the gateway (README: "Claude Code, the Anthropic SDKs and the Responses API"),
# with the keyless `demo` model. The Anthropic SDK reads the same variables Claude Code does, so this
# runs what Claude Code sends: a streamed Messages request with a tool, then count_tokens.
export ANTHROPIC_BASE_URL=http://127.0.0.1:8000
export ANTHROPIC_AUTH_TOKEN=unused-without-gateway-keys
export ANTHROPIC_API_KEY=""
export ANTHROPIC_MODEL=demo
python - <<'PY'
import os

import anthropic

client = anthropic.Anthropic(api_key=None)  # base URL and Bearer token from the environment
model = os.environ["ANTHROPIC_MODEL"]
bash = {"name": "Bash", "description": "Run a shell command",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}
with client.messages.stream(model=model, max_tokens=200, tools=[bash], tool_choice={"type": "tool", "name": "Bash"},
                            messages=[{"role": "user", "content": "list the files"}]) as stream:
    message = stream.get_final_message()
call = next(block for block in message.content if block.type == "tool_use")
print(message.stop_reason, call.name, sorted(call.input))
# prints: tool_use Bash ['command']
reply = client.messages.create(model=model, max_tokens=200, tools=[bash], messages=[
    {"role": "user", "content": "list the files"},
    {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": "Bash", "input": call.input}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "README.md"}]}])
print(reply.content[0].text)
# prints: README.md
count = client.messages.count_tokens(model=model, messages=[{"role": "user", "content": "list the files"}])
print("input tokens:", count.input_tokens > 0)
# prints: input tokens: True
PY
