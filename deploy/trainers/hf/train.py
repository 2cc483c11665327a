"""LLMHub production trainer: LoRA, QLoRA or full fine-tuning of a Hugging Face causal LM.

Follows the trainer contract of common/fine-tune.ts, as the reference trainer (deploy/trainers/reference) does:

  env     LLMHUB_RUN_PREFIX        s3://bucket/prefix/ where everything below is written
          LLMHUB_BASE_MODEL_URI    s3:// URI of the base model: a folder (prefix) of a Hugging Face checkpoint
          LLMHUB_DATASET_URI       s3:// URI of a JSONL dataset, one {"prompt": ..., "completion": ...} or {"text": ...} per line
          LLMHUB_METHOD            lora | qlora | full
          LLMHUB_HYPERPARAMETERS   JSON: totalSteps, batchSize, learningRate, loraRank, loraAlpha, checkpointEverySteps, evalFraction, seed
          LLMHUB_RESUME_FROM       s3:// URI of a checkpoint folder to resume from ("" for a fresh run)
          LLMHUB_ATTEMPT           the Job attempt (1, 2, ...), recorded in progress.json's segments
          S3_ENDPOINT, S3_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (the Job's secretKeyRefs)
  writes  progress.json                        step, totalSteps, loss [[step, loss]], evalLoss, checkpoint, segments, output
          checkpoints/step-NNNNNNNN/           adapter or model weights + optimizer/scheduler/RNG state (Trainer's checkpoint)
          output/                              the merged model (LoRA adapters merged into the base) as safetensors
  exit    0 done, 2 bad input, 1 anything else

Written for the production image (Dockerfile beside it); not run in this repository's CI, which has no GPU and no torch.
"""
import json
import os
import sys
import tempfile
from pathlib import Path

import boto3


class BadInput(Exception):
    pass


def split_uri(uri: str):
    if not uri.startswith("s3://"):
        raise BadInput(f"{uri} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def s3():
    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("S3_ENDPOINT") or None,
        region_name=os.environ.get("S3_REGION", "us-east-1"),
    )


def download_prefix(client, uri: str, dest: Path) -> Path:
    bucket, prefix = split_uri(uri)
    found = False
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):].lstrip("/") or Path(obj["Key"]).name
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(target))
            found = True
    if not found:
        raise BadInput(f"{uri} holds no objects")
    return dest


def upload_dir(client, src: Path, uri: str) -> None:
    bucket, prefix = split_uri(uri)
    for path in src.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(src)}")


def main() -> int:
    env = os.environ
    try:
        prefix = env["LLMHUB_RUN_PREFIX"].rstrip("/") + "/"
        method = env["LLMHUB_METHOD"]
        hp = json.loads(env["LLMHUB_HYPERPARAMETERS"])
        if method not in ("lora", "qlora", "full"):
            raise BadInput(f"LLMHUB_METHOD '{method}' is not lora, qlora or full")
    except (KeyError, json.JSONDecodeError) as err:
        print(f"bad trainer environment: {err}", file=sys.stderr)
        return 2

    import torch
    from datasets import load_dataset
    from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, DataCollatorForLanguageModeling,
                              Trainer, TrainerCallback, TrainingArguments, set_seed)

    client = s3()
    bucket, key_prefix = split_uri(prefix)
    attempt = int(env.get("LLMHUB_ATTEMPT", "1"))
    resume = env.get("LLMHUB_RESUME_FROM") or None
    work = Path(tempfile.mkdtemp(prefix="llmhub-train-"))
    set_seed(hp["seed"])

    base_dir = download_prefix(client, env["LLMHUB_BASE_MODEL_URI"].rsplit("/", 1)[0] + "/", work / "base")
    data_file = work / "data.jsonl"
    client.download_file(*split_uri(env["LLMHUB_DATASET_URI"]), str(data_file))

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16) if method == "qlora" else None
    model = AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=quant, torch_dtype=torch.bfloat16, device_map="auto")
    if method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        if method == "qlora":
            model = prepare_model_for_kbit_training(model)
        model = get_peft_model(model, LoraConfig(r=hp["loraRank"], lora_alpha=hp["loraAlpha"], task_type="CAUSAL_LM", target_modules="all-linear"))

    raw = load_dataset("json", data_files=str(data_file))["train"]
    text = lambda r: r["text"] if "text" in r else f"{r['prompt']}{r['completion']}"
    tokenized = raw.map(lambda r: tokenizer(text(r), truncation=True, max_length=2048), remove_columns=raw.column_names)
    split = tokenized.train_test_split(test_size=hp["evalFraction"], seed=hp["seed"]) if hp["evalFraction"] > 0 else {"train": tokenized, "test": None}

    progress_key = f"{key_prefix}progress.json"
    try:
        progress = json.loads(client.get_object(Bucket=bucket, Key=progress_key)["Body"].read()) if resume else None
    except client.exceptions.NoSuchKey:
        progress = None
    start_step = 0
    ckpt_dir = work / "checkpoints"
    if resume:
        start_step = int(resume.rstrip("/").rsplit("-", 1)[1])
        download_prefix(client, resume.rstrip("/") + "/", ckpt_dir / f"checkpoint-{start_step}")
    progress = progress or {"step": 0, "totalSteps": hp["totalSteps"], "loss": [], "evalLoss": [], "checkpoint": None, "segments": [], "output": None}
    progress.update(step=start_step, totalSteps=hp["totalSteps"], output=None)
    progress["loss"] = [p for p in progress["loss"] if p[0] <= start_step]
    progress["evalLoss"] = [p for p in progress["evalLoss"] if p[0] <= start_step]
    segment = {"attempt": attempt, "fromStep": start_step, "toStep": start_step}
    progress["segments"].append(segment)

    def write_progress():
        client.put_object(Bucket=bucket, Key=progress_key, Body=json.dumps(progress).encode(), ContentType="application/json")

    class Report(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            progress["step"] = segment["toStep"] = state.global_step
            if "loss" in logs:
                progress["loss"].append([state.global_step, logs["loss"]])
            if "eval_loss" in logs:
                progress["evalLoss"].append([state.global_step, logs["eval_loss"]])
            write_progress()

        def on_save(self, args, state, control, **kwargs):
            local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            uri = f"{prefix}checkpoints/step-{state.global_step:08d}"
            upload_dir(client, local, uri)
            progress["checkpoint"] = {"step": state.global_step, "uri": uri}
            write_progress()

    args = TrainingArguments(
        output_dir=str(ckpt_dir), max_steps=hp["totalSteps"], per_device_train_batch_size=hp["batchSize"], learning_rate=hp["learningRate"],
        save_steps=hp["checkpointEverySteps"], eval_strategy="steps" if split["test"] is not None else "no", eval_steps=hp["checkpointEverySteps"],
        logging_steps=1, seed=hp["seed"], data_seed=hp["seed"], bf16=True, report_to=[], save_total_limit=2,
    )
    trainer = Trainer(model=model, args=args, train_dataset=split["train"], eval_dataset=split["test"],
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False), callbacks=[Report()])
    write_progress()
    trainer.train(resume_from_checkpoint=str(ckpt_dir / f"checkpoint-{start_step}") if resume else None)

    out = work / "output"
    if method == "qlora":
        # Adapters trained against the 4-bit base are merged into the bf16 base: merging into 4-bit weights would be lossy.
        from peft import PeftModel
        adapter = work / "adapter"
        model.save_pretrained(adapter)
        merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.bfloat16), adapter).merge_and_unload()
    else:
        merged = model.merge_and_unload() if method == "lora" else model
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    upload_dir(client, out, f"{prefix}output")
    progress["output"] = {"uri": f"{prefix}output/model.safetensors"}
    write_progress()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BadInput as err:
        print(f"bad input: {err}", file=sys.stderr)
        sys.exit(2)
