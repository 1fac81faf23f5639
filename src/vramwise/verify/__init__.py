"""The PyTorch twin: build the real transformers model and measure it. Needs the ``verify`` extra (torch)."""
