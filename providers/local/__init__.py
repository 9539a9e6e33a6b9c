"""Local provider: LoRA fine-tuning and generation with transformers + peft, on CPU or one GPU.

Its modules, each importing only those before it: ``weights`` (a base model's files: a Hugging
Face directory, or a GGUF file dequantized once), ``loading`` (device, dtype, model and
tokenizer), ``encoding`` (training data and batches), ``loss``, ``checkpoints``, ``training``
(``LocalLoRAFineTuner``); ``cpu_matmul`` (oneDNN linear layers on CPU) and ``generation``
(``LocalChatModel``). Importers name the module they need; this package exports nothing.
"""
