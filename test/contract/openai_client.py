"""OpenAI's official Python client against the platform, as a user of it would call it (the batch test runs this).

Prints one JSON object: what each call gave, or the error class and status it raised. BASE, KEY and MODEL come from
the environment; the model is one that answers chat (the reference model server).
"""

import io
import json
import os
import time

import openai
from openai import OpenAI

client = OpenAI(base_url=f"{os.environ['BASE']}/v1", api_key=os.environ["KEY"], max_retries=0)
model = os.environ["MODEL"]
out: dict = {}


def refused(call):
    try:
        call()
    except openai.APIStatusError as e:
        return {"class": type(e).__name__, "status": e.status_code}
    return None


out["chat"] = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}]).choices[0].message.content
with client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "hello"}], stream=True, stream_options={"include_usage": True}
) as stream:
    chunks = list(stream)
out["stream"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
out["streamUsage"] = next((c.usage.total_tokens for c in chunks if c.usage), None)
# The client asks for base64 unless told otherwise, and decodes whichever it gets.
embedded = client.embeddings.create(model=model, input=["first", "second"]).data
out["embeddings"] = [len(e.embedding) > 0 and all(isinstance(x, float) for x in e.embedding) for e in embedded]
retrieved = client.models.retrieve(model)
out["model"] = {"id": retrieved.id, "object": retrieved.object, "owned_by": retrieved.owned_by, "created": retrieved.created > 0}
out["modelListed"] = model in [m.id for m in client.models.list()]
out["unknownModel"] = refused(lambda: client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}]))

lines = "".join(
    json.dumps({"custom_id": f"py-{i}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": model, "messages": [{"role": "user", "content": f"line {i}"}]}}) + "\n"
    for i in range(3)
)
file = client.files.create(file=("input.jsonl", io.BytesIO(lines.encode())), purpose="batch")
batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
deadline = time.monotonic() + 120
while batch.status not in ("completed", "failed", "expired", "cancelled") and time.monotonic() < deadline:
    time.sleep(0.2)
    batch = client.batches.retrieve(batch.id)
out["batch"] = {"status": batch.status, "counts": batch.request_counts.model_dump()}
out["output"] = sorted(json.loads(l)["custom_id"] for l in client.files.content(batch.output_file_id).text.splitlines())
out["listed"] = batch.id in [b.id for b in client.batches.list(limit=100)]
# Both send `content-type: application/json` with no body.
out["cancelEnded"] = client.batches.cancel(batch.id).status
out["deleted"] = client.files.delete(file.id).deleted
out["deletedFile"] = refused(lambda: client.files.retrieve(file.id))
print(json.dumps(out))
